"""tinytrans: design, tokenize, train, run and size a small decoder-only transformer.

The package mirrors the course: ``model`` (chapter 1), ``tokenizers`` and ``data``
(chapter 2), ``train`` (chapter 3), ``generate`` (chapter 4), ``sizing`` (chapter 5);
``widgets`` and ``interop`` sit on top.
"""

__version__ = "0.2.0"
