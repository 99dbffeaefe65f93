"""A model served by Triton Inference Server, behind the same Runtime interface as a local one.

``edgecat bench --backend triton --url HOST:8000`` measures a served model the way it measures ONNX
Runtime or TensorRT: same images, same preprocessing, same probabilities. The model name comes from
the repository ``edgecat export --triton`` wrote (``<bundle>-<artifact>``), so only the URL is needed.
``last_inference_ms`` is the client round trip: network, queueing and server inference together.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgecat.errors import EdgecatError, MissingDependencyError, first_line
from edgecat.redact import redact
from edgecat.runtime.base import Runtime, as_model_input
from edgecat.runtime.triton.loader import (
    DEFAULT_URL,
    URL_ENV,
    artifact_precision,
    is_engine,
    model_name,
    servable_artifacts,
    server_credentials,
    server_url,
)

log = logging.getLogger(__name__)

class TritonRuntime(Runtime):
    """Options: ``url`` (default $EDGECAT_TRITON_URL or localhost:8000), ``model`` (a served model
    name, overriding the one derived from the bundle), ``timeout`` (seconds, default 10)."""

    backend = "triton"

    def candidate_models(self) -> list[tuple[str, str]]:
        """(model name, artifact key) the bundle would be served as at this precision, engines first."""
        keys = [k for k in servable_artifacts(self.bundle)
                if artifact_precision(k, self.bundle.artifacts[k]) == self.precision]
        keys.sort(key=lambda k: (not is_engine(k, self.bundle.artifacts[k]), k))
        return [(model_name(self.bundle, k), k) for k in keys]

    def _load(self) -> None:
        try:
            import tritonclient.http as httpclient
        except ImportError as exc:
            raise MissingDependencyError(
                "the triton backend needs tritonclient: pip install 'edgecat[triton]'"
            ) from exc
        self._http = httpclient
        self._connect(httpclient)
        self._pick_model()
        self._read_model()
        log.info("Triton model %s at %s (max batch %d)", self.model_name, self.url, self.max_batch)

    def _connect(self, httpclient: Any) -> None:
        """A client to a live server (basic auth from the URL's credentials, never shown)."""
        from tritonclient.utils import InferenceServerException

        self.url = server_url(self.options.get("url"))
        timeout = float(self.options.get("timeout") or 10.0)
        try:
            self.client = httpclient.InferenceServerClient(
                url=self.url, connection_timeout=timeout, network_timeout=timeout
            )
            credentials = server_credentials(self.options.get("url"))
            if credentials:
                from tritonclient.http.auth import BasicAuth

                self.client.register_plugin(BasicAuth(*credentials))
            live = self.client.is_server_live()
        except (InferenceServerException, OSError, ValueError) as exc:
            raise EdgecatError(
                f"Triton server at {self.url} does not answer ({_message(exc)}); start it "
                f"(deploy/triton/README.md) or pass --url HOST:PORT"
            ) from exc
        if not live:
            raise EdgecatError(
                f"Triton server at {self.url} is not live (unreachable or still starting); "
                "check it (deploy/triton/README.md) or pass --url HOST:PORT"
            )

    def _pick_model(self) -> None:
        """The first ready model among the names this bundle is served as (or the one asked for)."""
        from tritonclient.utils import InferenceServerException

        explicit = self.options.get("model")
        candidates = [(str(explicit), None)] if explicit else self.candidate_models()
        if not candidates:
            raise EdgecatError(
                f"bundle {self.bundle.path} has no {self.precision} model to look for on Triton; "
                "export it (`edgecat export BUNDLE --triton DIR`) and serve that repository"
            )
        for name, key in candidates:
            try:
                ready = self.client.is_model_ready(name)
            except (InferenceServerException, OSError) as exc:
                raise EdgecatError(f"Triton server at {self.url}: {_message(exc)}") from exc
            if ready:
                self.model_name, self.artifact_key = name, key
                break
        else:
            names = ", ".join(n for n, _ in candidates)
            raise EdgecatError(
                f"Triton server at {self.url} has no ready model named {names}; serve the repository "
                "written by `edgecat export BUNDLE --triton DIR` (or pass the model name)"
            )

    def _read_model(self) -> None:
        """Batch limit and I/O names from the served model, checked against the bundle's input size."""
        from tritonclient.utils import InferenceServerException

        try:
            config = self.client.get_model_config(self.model_name)
            meta = self.client.get_model_metadata(self.model_name)
        except (InferenceServerException, OSError) as exc:
            raise EdgecatError(f"Triton model {self.model_name}: {_message(exc)}") from exc
        self.max_batch = int(config.get("max_batch_size", 0)) or 1
        shape = [int(d) for d in meta["inputs"][0].get("shape", [])]
        want = [*self.bundle.input_size, 3]
        if shape[-3:] != want:
            raise EdgecatError(
                f"Triton model {self.model_name} takes input {shape}, but bundle {self.bundle.path} is "
                f"{want[0]}x{want[1]}: the server serves another model under this name; re-export the repository"
            )
        self.input_name = meta["inputs"][0]["name"]
        self.input_datatype = meta["inputs"][0]["datatype"]
        self.output_name = meta["outputs"][0]["name"]

    @property
    def description(self) -> str:
        return f"triton/{self.precision} ({self.model_name})"

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        return as_model_input(batch, uint8=self.input_datatype == "UINT8")

    def _infer_once(self, batch: np.ndarray) -> np.ndarray:
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        inp = self._http.InferInput(self.input_name, list(batch.shape), np_to_triton_dtype(batch.dtype))
        inp.set_data_from_numpy(batch, binary_data=True)
        out = self._http.InferRequestedOutput(self.output_name, binary_data=True)
        try:
            result = self.client.infer(self.model_name, inputs=[inp], outputs=[out])
        except (InferenceServerException, OSError) as exc:
            raise EdgecatError(f"Triton inference on {self.model_name} failed: {_message(exc)}") from exc
        return result.as_numpy(self.output_name)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # Batches larger than the served max_batch_size go as several requests.
        if len(batch) <= self.max_batch:
            return self._infer_once(batch)
        parts = [self._infer_once(batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a dead connection is not worth an error
                pass
        super().close()


def _message(exc: BaseException) -> str:
    """The exception's first line with any credential in a URL masked (client errors echo the URL)."""
    return redact(first_line(exc) or type(exc).__name__)[:200]


__all__ = ["DEFAULT_URL", "URL_ENV", "TritonRuntime", "server_credentials", "server_url"]
