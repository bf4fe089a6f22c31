"""Ray Serve's metrics behind serve_app.core.metrics: each replica installs them when it starts.

Exported by the metrics agent of the replica's node on its metrics export port (``make run``:
STT_METRICS_PORT; KubeRay: 8080), as ``ray_stt_*`` beside Ray's own ``ray_serve_*``. Ray adds
the labels deployment, replica and application.
"""

from __future__ import annotations

from ray.serve import metrics

from serve_app.core.metrics import METRICS


class RayInstruments:
    def counter(self, name, description, tag_keys):
        return metrics.Counter(name, description=description, tag_keys=tag_keys)

    def gauge(self, name, description, tag_keys):
        return metrics.Gauge(name, description=description, tag_keys=tag_keys)

    def histogram(self, name, description, boundaries, tag_keys):
        return metrics.Histogram(name, description=description, boundaries=list(boundaries), tag_keys=tag_keys)


def install_ray_metrics() -> None:
    METRICS.install(RayInstruments())
