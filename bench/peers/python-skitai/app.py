"""WSGI hello on the original Python Skitai (PyPI `skitai`), the bench reference.

Usage: python app.py --port PORT     (started by bench/run inside a throwaway venv)
One worker process, threads=0 (the single-threaded event loop), request log off,
listening on 127.0.0.1 only.
"""
import sys

import skitai


def app(env, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 5000
    skitai.log_off("/")
    skitai.set_keep_alive(300)
    skitai.set_backlog(4096)
    skitai.mount("/", app)
    skitai.run(address="127.0.0.1", port=port, workers=1, threads=0, name="bench-hello")
