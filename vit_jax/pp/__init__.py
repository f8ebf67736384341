"""Preprocessing: image decoding (`images`), the op registry (`registry`), the built-in
ops (`ops_image`, `ops_general`, `randaugment`) and the pp-string builder (`builder`)."""
