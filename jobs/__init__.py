"""Thin command-line steps: parse arguments, call `common`, write outputs."""
