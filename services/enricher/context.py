"""Container and pod context in Tetragon's shape, per container (built once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.events import Container, Image, Pod

if TYPE_CHECKING:
    from services.common.containers import ContainerInfo


@dataclass(frozen=True, slots=True)
class ContainerContext:
    id: str  # full container id
    init_pid: int | None  # host pid of the container's init process
    docker: str  # Tetragon's `docker` field: the id cut to 31 characters
    pod: Pod | None


def context_of(info: ContainerInfo) -> ContainerContext:
    """Tetragon's pod/container fields from what the runtime said. Plain
    containers get a pod with only the container (no namespace or name)."""
    image = Image(id=info.image_id or "", name=info.image or "") if info.image else None
    container = Container(
        id=f"{info.runtime}://{info.id}",
        name=info.name or "",
        image=image,
        start_time=info.started_ns,
    )
    if info.pod is not None:
        pod = Pod(namespace=info.pod.namespace, name=info.pod.name, container=container)
    else:
        pod = Pod(container=container)
    return ContainerContext(id=info.id, init_pid=info.pid, docker=info.id[:31], pod=pod)
