"""File and video I/O: atomic writes, video decoding (PyAV, decord, OpenCV), PNG and H.264 encoding."""
