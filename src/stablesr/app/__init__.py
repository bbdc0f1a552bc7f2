"""``stablesr ui``: a web page (Gradio) for upscaling in the browser, with a before/after slider.

Install with ``pip install "stablesr[ui]"``; gradio is imported only when the command runs
(:mod:`stablesr.cli.ui`), so ``import stablesr.app`` stays light.
"""
