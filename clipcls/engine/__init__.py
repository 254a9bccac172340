"""The engine: the only package that imports torch, open_clip and torchvision, each on first use.

Everything outside it works on numpy arrays and the plain dataclasses defined here.
"""
