"""The emulator's image registry: which images exist and what is "inside" each one.

An image stands for its contents as far as the test kubelet needs them: the environment and
working directory its Dockerfile sets (``ENV``, ``WORKDIR``) and optionally its ``ENTRYPOINT`` and
``CMD``. The pod's container runs as a local process in that environment; an image that was never
registered cannot be pulled (``ErrImagePull`` then ``ImagePullBackOff``). References are matched the
way a registry resolves them: ``python:3.11`` is ``docker.io/library/python:3.11`` and an untagged
name means ``:latest``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

# A loose version of the distribution reference grammar: lower-case path, optional tag and digest.
_REFERENCE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


@dataclass(frozen=True)
class Image:
    """What the test kubelet knows of an image."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The registration payload (``POST /_emulator/images``)."""
        return asdict(self)

    def image_id(self) -> str:
        """A stable ``imageID`` as a container status reports it."""
        digest = hashlib.sha256(normalize(self.name).encode()).hexdigest()
        return f"{normalize(self.name).rsplit(':', 1)[0]}@sha256:{digest}"


def valid_reference(reference: str) -> bool:
    """Whether a container runtime could parse the reference at all (else ``InvalidImageName``)."""
    return bool(_REFERENCE.match(reference))


def normalize(reference: str) -> str:
    """The fully qualified reference (``docker.io/library/x:latest`` for ``x``)."""
    name, _, digest = reference.partition("@")
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name = f"{name}:latest"
    return f"{name}@{digest}" if digest else name


class Registry:
    """The images the test kubelet can pull."""

    def __init__(self) -> None:
        self._images: dict[str, Image] = {}

    def register(self, image: Image) -> None:
        """Make ``image`` pullable (a later registration of the same name replaces it)."""
        self._images[normalize(image.name)] = image

    def lookup(self, reference: str) -> Image | None:
        """The image a reference resolves to, or None."""
        return self._images.get(normalize(reference))

    def all(self) -> list[Image]:
        """Every registered image."""
        return list(self._images.values())
