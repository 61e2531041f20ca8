"""The stable-diffusion.cpp runtime: text and image to image over the Runtime contract."""
