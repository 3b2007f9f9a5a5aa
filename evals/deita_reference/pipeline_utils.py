# ruff: noqa  (third-party code kept verbatim: not linted)
# Copied from hkust-nlp/deita (https://github.com/hkust-nlp/deita), commit
# b279f2c329b403d2612a61e270c8d2a2eeaed6f4, file src/deita/pipeline/utils.py: only the function
# sort_key_split (lines 1-20 of that file), unchanged. Apache License 2.0 (see LICENSE in this folder).
import json
from typing import List

INSTRUCTION_ONLY_TYPE = ["complexity"]
INSTRUCTION_RESPONSE_TYPE = ["quality"]

def sort_key_split(sort_key: str) -> List:
    """
    Split sort_key into a list of sort keys.
    
    sort_key: str - sort key to split.
    """
    if "," in sort_key:
        return sort_key.split(",")
    elif "." in sort_key:
        return sort_key.split(".")
    elif "+" in sort_key:
        return sort_key.split("+")
    else:
        raise ValueError("sort_key must be a string with delimiter ',' or '.' or '+'.")
