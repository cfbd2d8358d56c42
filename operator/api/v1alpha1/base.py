"""Building blocks shared by every cutover.dev/v1alpha1 kind.

Every cross-field invariant is declared once, as a :class:`Rule` that carries both the CEL
expression the API server evaluates (``x-kubernetes-validations`` in the generated CRD) and
the Python predicate the operator evaluates, with one message for both. A platform engineer
sees the same words from ``kubectl apply`` and from the operator's status condition.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake

GROUP = "cutover.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# At most 4 parts of at most 5 digits (99999h is 11 years): every admitted duration stays within
# CEL's duration range and can be added to a timestamp.
_DURATION_RE = re.compile(r"^(?:[0-9]{1,5}(?:ms|s|m|h)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DURATION_PATTERN = _DURATION_RE.pattern
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
"""A Go-style duration string; CEL's ``duration()`` parses the same syntax."""


def seconds(duration: str) -> float:
    """Return the length of a :data:`Duration` string in seconds."""
    if not _DURATION_RE.match(duration):
        raise ValueError(f"{duration!r} is not a duration such as 30s, 5m or 1h30m")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(duration))


_QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
        }
    ),
]
"""A Kubernetes resource quantity (``2``, ``500m``, ``16Gi``)."""

DNSLabel = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
"""A lowercase RFC 1123 label: the form of Kubernetes object names we derive from it."""


@dataclass(frozen=True)
class Rule:
    """One cross-field invariant, enforced by the API server (CEL) and by pydantic."""

    cel: str
    message: str
    check: Callable[..., bool]
    field_path: str | None = None
    transition: bool = False
    """A rule over the old and the new object (CEL ``oldSelf``); ``check(new, old)``. It runs only
    on updates, so the validator skips it and :meth:`ApiModel.transition_errors` runs it."""

    def schema(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


class ApiModel(BaseModel):
    """Base for every API object: camelCase on the wire, snake_case in Python, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = [rule.message for rule in type(self).rules if not rule.transition and not rule.check(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler(core_schema)
        if cls.rules:  # inherited rules too: a subclass's schema is generated on its own
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [rule.schema() for rule in cls.rules]
        return schema

    def transition_errors(self, old: Self) -> list[str]:
        """Messages of the update rules that moving from ``old`` to this object breaks."""
        return [rule.message for rule in type(self).rules if rule.transition and not rule.check(self, old)]

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores and returns it: camelCase, without unset optional
        fields, and numbers as its JSON round trip writes them (see :func:`as_stored`). Anything
        computed from the wire form (revision hashes, pod templates, the status compared with
        the stored one) is then the same whether it starts from a parsed object or from what the
        API server handed back."""
        stored: dict[str, Any] = as_stored(self.model_dump(by_alias=True, exclude_none=True, mode="json"))
        return stored


_GO_INTEGER_LIMIT = 1e21
"""Go's encoding/json writes a float64 below this magnitude without exponent or fraction when
its value is integral, so ``10.0`` comes back from the API server as ``10``."""


def as_stored(value: Any) -> Any:
    """``value`` (plain JSON data) with every float written the way the API server's JSON round
    trip gives it back: an integral float below 1e21 becomes the integer of its shortest decimal
    form (``10.0`` -> ``10``, ``1.5e20`` -> ``150000000000000000000``); other floats, and
    everything else, stay as they are. Idempotent: ``as_stored`` of what the API server returns
    for ``as_stored(x)`` is ``as_stored(x)`` itself."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _GO_INTEGER_LIMIT:
            return int(Decimal(repr(value)))
        return value
    if isinstance(value, dict):
        return {key: as_stored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_stored(item) for item in value]
    return value


def exactly_one(*present: bool) -> bool:
    return sum(present) == 1


def one_of(first: str, second: str, message: str) -> Rule:
    """Exactly one of two optional fields (named as on the wire) is set."""
    a, b = to_snake(first), to_snake(second)
    return Rule(
        cel=f"has(self.{first}) != has(self.{second})",
        message=message,
        check=lambda s: (getattr(s, a) is None) != (getattr(s, b) is None),
    )


def not_above(low: str, high: str, message: str) -> Rule:
    """When both optional fields are set, ``low`` must not exceed ``high``."""
    return Rule(
        cel=f"!has(self.{low}) || !has(self.{high}) || self.{low} <= self.{high}",
        message=message,
        check=lambda s: getattr(s, low) is None or getattr(s, high) is None or getattr(s, low) <= getattr(s, high),
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """The standard Kubernetes condition (metav1.Condition)."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=316)]
    """Type of condition in CamelCase, such as Ready or Promoted."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[str, StringConstraints(max_length=1024)] = ""
    """One CamelCase word saying why the condition is in this state."""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    """Human-readable detail, including numbers where there are any."""
    last_transition_time: datetime | None = None
    """When the status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this condition was computed from."""


Conditions = Annotated[
    list[Condition],
    Field(json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
]
"""A condition list keyed by type, so server-side apply merges conditions one by one."""


class ObjectMeta(ApiModel):
    """The parts of metadata the operator reads; the API server owns the rest."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class SecretKeyRef(ApiModel):
    """A key in a Secret in the resource's own namespace."""

    name: DNSLabel
    """Name of the Secret."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    """Key within the Secret."""


class LocalObjectRef(ApiModel):
    """A reference by name to an object in the same namespace."""

    name: DNSLabel
    """Name of the referenced object."""


class LabelSelectorRequirement(ApiModel):
    """One set-based label requirement."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=317)]
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""
    values: Annotated[list[str], Field(max_length=64)] = []
    """Values for In and NotIn; must be empty for Exists and DoesNotExist."""

    rules = (
        Rule(
            cel="(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
            message="values must be non-empty for In and NotIn and empty for Exists and DoesNotExist",
            check=lambda s: (s.operator in ("In", "NotIn")) == bool(s.values),
        ),
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector."""

    match_labels: dict[str, str] = {}
    """Labels that must all match exactly."""
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=16)] = []
    """Set-based requirements that must all hold."""

    rules = (
        Rule(
            cel="(has(self.matchLabels) && size(self.matchLabels) > 0) || "
            "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            message="a selector needs at least one of matchLabels or matchExpressions; "
            "an empty selector would match every ModelDeployment",
            check=lambda s: bool(s.match_labels or s.match_expressions),
        ),
    )


# On-call requests: `kubectl annotate md/NAME cutover.dev/<action>=<request id>`. The value is the
# request id: each distinct value is handled once, recorded in status.handledRequests, and the
# annotation is left in place so GitOps tools see no drift. rollback-to takes the revision.
REQUEST_ANNOTATIONS = {
    "promote": f"{GROUP}/promote",
    "abort": f"{GROUP}/abort",
    "rollback": f"{GROUP}/rollback",
    "rollbackTo": f"{GROUP}/rollback-to",
    "pause": f"{GROUP}/pause",
    "resume": f"{GROUP}/resume",
    "retry": f"{GROUP}/retry",
}
