"""The torch worker's TokenSet (tunegraph_torch/data.py) over Tokens directories.

Reads a JSON object {dirs, vocab} on stdin and prints a JSON list, per
directory, of {tokens, labels, offsets, segments, count, padId} or {error}.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../../plugins/train/torch"))

from tunegraph_torch.data import TokenDataError, TokenSet  # noqa: E402


def read(directory, vocab):
    try:
        s = TokenSet(directory, vocab)
    except TokenDataError as e:
        return {"error": str(e)}
    return {
        "tokens": s.tokens.tolist(),
        "labels": s.labels.tolist(),
        "offsets": s.offsets.tolist(),
        "segments": None if s.segments is None else s.segments.tolist(),
        "count": s.count,
        "padId": s.pad_id,
    }


job = json.load(sys.stdin)
print(json.dumps([read(d, job["vocab"]) for d in job["dirs"]]))
