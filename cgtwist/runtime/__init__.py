"""Code that relies on Twisted's private internals (charter to follow)."""
