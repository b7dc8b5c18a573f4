"""The search driver: command line, Tuner assembly, trial function, callbacks.

The only package that imports Ray.
"""
