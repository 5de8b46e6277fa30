#!/usr/bin/env python3
"""
The torch backend's worker process. tunegraph starts it and talks to it over
pipes: one JSON job on stdin, JSON lines on stdout (log, metric, progress,
annotate, then done or error). Anything else a library prints goes to
stderr.

    python3 worker.py probe          # versions and devices, one JSON object
    python3 worker.py train < job    # one training job
    python3 worker.py serve          # requests line by line (generate, eval)

SIGTERM or SIGINT during training saves a checkpoint and exits with 130.
"""
import json
import os
import signal
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
for k, v in (
    ("TRANSFORMERS_VERBOSITY", "error"),
    ("HF_HUB_OFFLINE", "1"),
    ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
):
    os.environ.setdefault(k, v)


class Out:
    def __init__(self, stream):
        self.stream = stream

    def send(self, message):
        self.stream.write(json.dumps(message, allow_nan=True) + "\n")
        self.stream.flush()

    def log(self, line):
        self.send({"type": "log", "line": line})

    def metric(self, name, value, step=None):
        m = {"type": "metric", "name": name, "value": float(value)}
        if step is not None:
            m["step"] = step
        self.send(m)

    def progress(self, done, total=None, detail=None):
        m = {"type": "progress", "done": done}
        if total is not None:
            m["total"] = total
        if detail is not None:
            m["detail"] = detail
        self.send(m)

    def annotate(self, fields):
        self.send({"type": "annotate", "fields": fields})


def main():
    op = sys.argv[1] if len(sys.argv) > 1 else ""
    # The protocol gets a private copy of stdout; fd 1 itself now points at stderr.
    out = Out(os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if op == "probe":
        from tunegraph_torch.probe import probe

        out.send(probe())
        return 0
    if op == "train":
        stopping = {"now": False}

        def on_signal(_sig, _frame):
            stopping["now"] = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        job = json.loads(sys.stdin.readline())
        try:
            from tunegraph_torch import train

            result = train.train(job, out, lambda: stopping["now"])
            out.send({"type": "done", "result": result})
            return 0
        except Exception as e:
            from tunegraph_torch.train import Interrupted

            if isinstance(e, Interrupted):
                out.send({"type": "interrupted", "step": e.args[0]})
                return 130
            traceback.print_exc(file=sys.stderr)
            name = type(e).__name__
            out.send({"type": "error", "name": name, "message": str(e) or name})
            return 1
    if op == "serve":
        from tunegraph_torch.serve import serve

        return serve(sys.stdin, out)
    sys.stderr.write("usage: worker.py probe | train | serve\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
