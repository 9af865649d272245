"""lape-harness: find language-specific neurons (LAPE) and steer them inside lm-evaluation-harness.

Example:
    >>> from lape_harness.languages import get_language
    >>> get_language("deu_Latn").name
    'German'
"""

__version__ = "0.1.0"
