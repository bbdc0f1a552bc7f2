"""StableSR on diffusers."""
