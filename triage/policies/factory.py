"""Building the scorer's policy from ``PolicySettings``: the one place a rule name is read."""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from triage.errors import ConfigError
from triage.policies.base import BaseRule, Routing
from triage.policies.consensus import consensus_policy
from triage.policies.review_rate import ReviewRateRule
from triage.policies.risk import RiskRule
from triage.policies.stack import PolicyStack
from triage.policies.threshold import ThresholdRule
from triage.scoring.routing import ModelInfo
from triage.settings import PolicyName, PolicySettings, QualitySettings

RULES: Mapping[PolicyName, Callable[[PolicySettings], BaseRule]] = {
    "threshold": ThresholdRule,
    "review-rate": ReviewRateRule,
    "risk": RiskRule,
}


def make_rule(policy: PolicySettings) -> BaseRule:
    return RULES[policy.policy](policy)


def policy_from_manifest(routing: Optional[Routing], policy: PolicySettings, *, version: str = "") -> PolicyStack:
    """The policy for a model version whose manifest holds ``routing`` (or None)."""
    return PolicyStack(policy, make_rule(policy), routing, version=version)


def make_policy(policy: PolicySettings, model: Optional[ModelInfo] = None,
                quality: Optional[QualitySettings] = None) -> PolicyStack:
    """The scorer's policy, for the model it starts serving (None: no model yet, so nothing
    fitted; with the default threshold rule that is plain threshold routing). ``quality``: how
    many annotators review requests ask for (None: one each)."""
    routing = (model.manifest or {}).get("routing") if model is not None else None
    rule = make_rule(policy)
    if rule.requires_routing and not routing:
        raise ConfigError(
            "--policy risk needs held-out labels to certify its threshold: pass --reference FILE "
            "whose data has y (npz with X and y, or CSV with a y/label column), or serve a registry "
            "bundle whose manifest has a routing section"
        )
    consensus = consensus_policy(quality) if quality is not None else None
    if model is None:
        return PolicyStack(policy, rule, consensus=consensus)
    return PolicyStack(policy, rule, routing, version=model.version, classes=model.classes, consensus=consensus)
