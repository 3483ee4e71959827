"""Component registries: register by name, build by name, fail loudly on unknown or duplicate names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .errors import ConfigError, DuplicateComponentError, UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory table for one sort of component ("backbone", "head", ...).

    The registered name is the component's only spelling: a registered class gets it as its
    `name` class attribute. A class may also declare a `kind` class attribute (e.g. "image" or
    "pose" for backbones), which `kind_of` answers without the caller importing the class.
    """

    def __init__(self, component: str) -> None:
        self.component = component
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Class or function decorator: `@BACKBONES.register("resnet50v2")`; sets a class's `name`."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                holder = self._factories[name]
                raise DuplicateComponentError(
                    f"{self.component} '{name}' is already registered by "
                    f"{holder.__module__}.{holder.__qualname__}; choose another name"
                )
            if isinstance(factory, type):
                factory.name = name  # type: ignore[attr-defined]
            self._factories[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under `name`."""
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownComponentError(
                f"unknown {self.component} '{name}'; known: {', '.join(self.list())}"
            ) from None

    def kind_of(self, name: str) -> str | None:
        """The `kind` class attribute of the component registered under `name` (None if it declares none)."""
        return getattr(self.get(name), "kind", None)

    def build(self, name: str, **params: Any) -> T:
        """Construct the component registered under `name` with keyword params."""
        return self.get(name)(**params)

    def list(self) -> list[str]:
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories


def check_names(option: str, kind: str, names: list[str], known: list[str]) -> None:
    """ConfigError naming the option, every unknown name and the known ones, when a name is not in `known`."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"{option} {' '.join(unknown)}: unknown {kind} {', '.join(repr(n) for n in unknown)}; "
                          f"known: {', '.join(known)}")
