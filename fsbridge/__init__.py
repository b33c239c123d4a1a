"""Folder bridge: mirrors a space folder into Tack documents and back."""
