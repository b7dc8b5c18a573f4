"""The table of component registries, by the kind a `TrialConfig` field names in its metadata.

`TrialConfig` validates a registry field (`encoder`, `rnn`, `pooler`, `loss`, `contrastive`,
`adversarial`) against this table. The component modules import `TrialConfig` only for their
annotations (under `TYPE_CHECKING`), so this module -> components is the only direction at
runtime and model/'s import graph has no cycle (tests/model/test_imports.py).

A new registry is one line here plus a field with `registry="<kind>"` in model/config.py. A module
that adds components to an existing registry (model/wordvec_encoders.py) is imported here, so the
registry is complete wherever a config is checked.
"""

from __future__ import annotations

import model.wordvec_encoders  # noqa: F401  (registers textcnn, dpcnn, bigru, bilstm in ENCODERS)
from model.adversarial import ADVERSARIAL
from model.contrastive import CONTRASTIVE
from model.encoders import ENCODERS
from model.errors import ConfigError
from model.losses import LOSSES
from model.poolers import POOLERS
from model.registry import Registry
from model.rnn import RNN_LAYERS

REGISTRIES: dict[str, Registry] = {
    "encoder": ENCODERS,
    "rnn": RNN_LAYERS,
    "pooler": POOLERS,
    "loss": LOSSES,
    "contrastive": CONTRASTIVE,
    "adversarial": ADVERSARIAL,
}


def registry(kind: str) -> Registry:
    """The registry of `kind` (the `registry=` of a `TrialConfig` field)."""
    if kind not in REGISTRIES:
        raise ConfigError(f"no component registry of kind {kind!r}; kinds are: {', '.join(REGISTRIES)} "
                          "(add the registry to REGISTRIES in model/components.py)")
    return REGISTRIES[kind]
