"""Routing policies: calibration, threshold / review-rate / risk rules, audit, hygiene,
budget and the acceptable-performance gate. Pure: no Kafka, no I/O.

Every policy implements ``triage.scoring.routing.RoutingPolicy``; ``PolicyStack`` composes one base
rule (``RULES``, chosen once by ``make_rule``) with the budget cap, gate, audit and hygiene.
Everything here takes ``PolicySettings`` (``Settings.policy``), never the whole Settings.
``fit_routing`` fits a model version's parameters (the manifest's ``routing`` section);
``make_policy`` / ``policy_from_manifest`` build the scorer's policy from them.
"""

from __future__ import annotations

from triage.policies.audit import AccuracyEstimate, AuditEstimator, wilson_interval
from triage.policies.base import BaseRule, RuleSnapshot
from triage.policies.factory import RULES, make_policy, make_rule, policy_from_manifest
from triage.policies.fit import fit_routing, label_indices, prepare_model
from triage.policies.review_rate import ReviewRateRule
from triage.policies.risk import RiskRule, clopper_pearson_interval, clopper_pearson_upper
from triage.policies.stack import PolicyStack
from triage.policies.threshold import ThresholdRule

__all__ = [
    "RULES", "AccuracyEstimate", "AuditEstimator", "BaseRule", "PolicyStack", "ReviewRateRule", "RiskRule",
    "RuleSnapshot", "ThresholdRule", "clopper_pearson_interval", "clopper_pearson_upper", "fit_routing",
    "label_indices", "make_policy", "make_rule", "policy_from_manifest", "prepare_model", "wilson_interval",
]
