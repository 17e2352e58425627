"""Files: input URLs, downloads, decoding, parsing, the memory budget, dead letters."""
