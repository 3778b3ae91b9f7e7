"""The Docker side of a session: one engine, the image builder and the container executor, made on first use."""

from __future__ import annotations

from buildml.executors.docker.engine import Engine, default_repository, docker_settings

from buildml.action import IMAGE_EXECUTOR


class Containers:
    """Picks the Docker executor for a spec; cancels everything it started."""

    def __init__(self, settings_raw, targets: dict, warn, transfer=lambda what, total, label=None: None):
        self.engine = Engine(docker_settings(settings_raw))
        self.targets = targets
        self.warn = warn
        self.transfer = transfer  # (what, total bytes, label) -> progress.Progress or None
        self._builder = None
        self._runner = None

    def naming(self, label) -> tuple[str, tuple, bool]:
        """(repository, extra tags, push) of an image target."""
        attrs = self.targets[label].attrs
        return attrs.get("repository") or default_repository(label), tuple(attrs.get("tags", ())), attrs.get("push", False)

    def image_ref(self, label, key: str) -> str:
        return f"{self.naming(label)[0]}:{key}"

    def executor_for(self, spec):
        if spec.executor == IMAGE_EXECUTOR:
            if self._builder is None:
                from buildml.executors.docker.image_build import ImageBuilder

                self._builder = ImageBuilder(self.engine, self.naming, self.warn, self.transfer)
            return self._builder
        if spec.kind == "endpoint":  # its action builds the serving image (buildml/executors/serving_image.py)
            return self._serving_builder()
        if self._runner is None:
            from buildml.executors.docker.run import DockerExecutor, sweep_orphans

            sweep_orphans(self.engine)
            self._runner = DockerExecutor(self.engine, self.image_ref)
        return self._runner

    def _serving_builder(self):
        if getattr(self, "_serving", None) is None:
            from buildml.executors.serving_image import ServingImageBuilder

            self._serving = ServingImageBuilder(self.engine, self.naming, self.image_ref, self.warn)
        return self._serving

    def cancel(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
