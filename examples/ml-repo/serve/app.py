"""A small prediction server (stdlib only): GET /health, POST /predict.

It loads ../models/out/model.pkl and uses the same feature transform as training
(../features/src/featurize.py), and listens on $PORT (default 8080).
"""
import json
import os
import pickle
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "features", "src"))
from featurize import N_PIXELS, featurize  # noqa: E402

with open(os.path.join(HERE, "..", "models", "out", "model.pkl"), "rb") as f:
    MODEL = pickle.load(f)


class Handler(BaseHTTPRequestHandler):
    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            # the endpoint's key (`buildml run` sets it): `buildml status //serve:classifier --live URL` compares it
            self._reply(200, {"status": "ok", "buildml_key": os.environ.get("BUILDML_ENDPOINT_KEY")})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/predict":
            return self._reply(404, {"error": "not found"})
        try:
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            pixels = request["pixels"]
            if len(pixels) != N_PIXELS:
                raise ValueError(f"expected {N_PIXELS} pixel values, got {len(pixels)}")
            digit = int(MODEL.predict(featurize(pixels))[0])
        except (KeyError, TypeError, ValueError) as exc:
            return self._reply(400, {"error": str(exc)})
        self._reply(200, {"digit": digit})

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"listening on :{port}", flush=True)
    server.serve_forever()
