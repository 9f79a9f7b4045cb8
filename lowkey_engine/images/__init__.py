"""Bytes <-> pixels. `decode.decode_image` turns an uploaded file into RGB pixels in [0, 1] (CHW),
refusing what is not a photo it can protect with a typed `errors.ImageError`; `encode.encode_image`
writes the protected pixels back in the input's format with privacy-relevant metadata removed;
`containers` reads and rewrites JPEG/PNG/WebP structure without decoding pixels.

Imports nothing else from the engine.
"""
