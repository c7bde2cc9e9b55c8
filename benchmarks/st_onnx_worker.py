"""Worker for encode_speed.py: sentence-transformers' own backend="onnx" on our exported folder.

Runs under a separate Python (``--st-onnx-python``) because sentence-transformers' ONNX backend needs
optimum-onnx, which requires transformers < 4.58 and so cannot live beside sentence-transformers 6.
Protocol (one JSON object per line): reads {"file": "onnx/model.onnx", "batch_size": 32, "save": path|null}
on stdin, answers {"seconds": encode time}; the models load once, before the first answer "ready".
"""

import json
import sys
import time

import numpy as np
from sentence_transformers import SentenceTransformer


def main() -> None:
    folder, texts_file = sys.argv[1:3]
    texts = json.loads(open(texts_file, encoding="utf-8").read())
    models = {name: SentenceTransformer(folder, backend="onnx", device="cpu", model_kwargs={"file_name": name})
              for name in sys.argv[3:]}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        emb = models[request["file"]].encode(texts, batch_size=request["batch_size"], convert_to_numpy=True)
        seconds = time.perf_counter() - started
        if request.get("save"):
            np.save(request["save"], emb.astype(np.float32))
        print(json.dumps({"seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
