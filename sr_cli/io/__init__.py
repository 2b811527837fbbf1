"""Files and images: reading (imageio), encoding and atomic image writes (image_encode, png_encoder), EXIF
repair (exif), the file-system layer (fsio), which files are images (imagefiles), and the batch runner (batch)."""
