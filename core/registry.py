"""Component registries: register by name, build by name, fail loudly on unknown or duplicate names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import DuplicateComponentError, UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory table for one kind of component (backbone, head, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Class or function decorator: `@BACKBONES.register("resnet50v2")`."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                holder = self._factories[name]
                raise DuplicateComponentError(
                    f"{self.kind} '{name}' is already registered by "
                    f"{holder.__module__}.{holder.__qualname__}; choose another name"
                )
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under `name`."""
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {self.kind} '{name}'; known: {', '.join(self.list())}"
            ) from None

    def build(self, name: str, **params: Any) -> T:
        """Construct the component registered under `name` with keyword params."""
        return self.get(name)(**params)

    def list(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
