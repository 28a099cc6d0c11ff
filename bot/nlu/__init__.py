"""Humanline's Rasa NLU components.

Referenced from ``config.yml`` by module path:

- ``bot.nlu.normalizer.TextNormalizer`` — first in the pipeline: Traditional→Simplified, full→half
  width, lower case; records the script of the original text as the ``script`` entity.
- ``bot.nlu.tokenizer.HumanlineJiebaTokenizer`` — Jieba without whitespace/punctuation tokens.
- ``bot.nlu.normalizer.OriginalTextRestorer`` — after the extractors: puts the customer's own text
  back and restores the letter case of extracted entity values (``HL-20261104-0001``).

Importing this package does not import Rasa; import the submodules for the components.
"""
