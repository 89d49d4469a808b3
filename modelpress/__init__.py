"""modelpress: compress, convert, accelerate and measure deep learning models."""
