"""triage's configuration, split by section.

Each section is its own pydantic-settings model reading ``TRIAGE_<FIELD>`` (the flat names
users already have: ``TRIAGE_BOOTSTRAP_SERVERS``, ``TRIAGE_POLICY``, ...). ``Settings`` only
groups the sections; entry points build it from flags (which override the environment) and
hand each library part just its own section. Each field's docstring is its help text
(``triage serve --help``). Secrets are ``SecretStr``: they print as ``**********``.

On the command line each section is one flag group: a command takes whole sections by name
(``SECTIONS``'s keys), and every field becomes ``--field-name`` unless it names its own flag
(``_flag``; the Label Studio bridge's ``--url``, ``--api-key``, ...). See ``flag_of``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

Acquisition = Literal["least-confidence", "margin", "entropy"]
ReviewOrder = Literal["priority", "diverse", "badge"]
KafkaClient = Literal["auto", "kafka-python", "confluent"]
PolicyName = Literal["threshold", "review-rate", "risk"]

ENV_PREFIX = "TRIAGE_"


def _flag(flag: str) -> dict[str, str]:
    """A field's flag when it is not ``--field-name`` (the bridge's short ``--url`` for
    ``label_studio_url``)."""
    return {"flag": flag}


class Section(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        use_attribute_docstrings=True,
        extra="forbid",
        validate_default=True,
        frozen=True,
    )


class ConnectionSettings(Section):
    """How to reach Kafka: brokers, client library, security, consumer-group timing, topic creation."""

    bootstrap_servers: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]."""
    kafka_client: KafkaClient = "auto"
    """Kafka client library: auto (confluent-kafka when installed), kafka-python or confluent."""
    group_id: str = "triage-scorer"
    """Consumer group of the scorer replicas on the samples topic."""
    session_timeout_ms: int = Field(10_000, ge=1000)
    """Consumer-group session timeout; a dead replica's partitions move after this long."""
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    """Longest allowed gap between polls before the group evicts this replica."""
    group_instance_id: Optional[str] = Field(None, min_length=1, max_length=249)
    """Static membership in the scorers' group (group.instance.id; unset = dynamic): a
    restarted replica with the same id gets its partitions back without a rebalance, if it
    returns within session_timeout_ms. Unique per replica (the pod name); see
    docs/operations/scaling.md."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Kafka security protocol."""
    sasl_mechanism: Optional[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]] = None
    """SASL mechanism when security_protocol is SASL_*."""
    sasl_username: Optional[str] = None
    """SASL user name."""
    sasl_password: Optional[SecretStr] = None
    """SASL password (secret; never logged)."""
    ssl_cafile: Optional[Path] = None
    """PEM file of CA certificates used to verify the brokers."""
    ssl_certfile: Optional[Path] = None
    """PEM client certificate for mutual TLS."""
    ssl_keyfile: Optional[Path] = None
    """PEM private key of the client certificate."""
    ssl_key_password: Optional[SecretStr] = None
    """Password of the client private key (secret; never logged)."""
    create_topics: bool = True
    """Create missing triage topics at start-up (explicitly, with topic_partitions)."""
    topic_partitions: int = Field(4, ge=1)
    """Partition count for topics triage creates; keep it >= the number of scorer replicas."""
    connect_timeout_s: float = Field(30.0, gt=0.0)
    """How long a command waits at start-up for a Kafka broker to answer before it gives up
    with one clear error (also bounds announcing a promotion or rollback)."""
    client_logs: bool = False
    """Show the Kafka client library's own log lines (librdkafka / kafka-python) at WARNING
    and above, rate-limited; without it they appear only with --log-level DEBUG."""

    linger_ms: int = Field(5, ge=0)
    """Producer linger: how long the producer waits to fill a batch."""

    @model_validator(mode="after")
    def _sasl_complete(self) -> "ConnectionSettings":
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                "security_protocol SASL_* needs sasl_mechanism, sasl_username and sasl_password "
                "(TRIAGE_SASL_MECHANISM, TRIAGE_SASL_USERNAME, TRIAGE_SASL_PASSWORD)"
            )
        return self


class TopicSettings(Section):
    """The names of the triage topics."""

    samples_topic: str = "triage.samples"
    """Input topic of samples to score."""
    predictions_topic: str = "triage.predictions"
    """Output topic of auto-accepted predictions."""
    review_topic: str = "triage.review"
    """Output topic of review requests for annotators."""
    labels_topic: str = "triage.labels"
    """Topic of human labels consumed by the retrain job."""
    models_topic: str = "triage.models"
    """Topic of model promote/rollback events read by every scorer replica."""
    dlq_topic: str = "triage.dlq"
    """Dead-letter topic: original bytes plus failure headers."""
    retrain_requests_topic: str = "triage.retrain-requests"
    """Topic of retrain requests: ``triage monitor`` writes one on a drift alarm or a low estimated accuracy."""


    def outputs(self) -> list[str]:
        """The scorer's output topics."""
        return [self.predictions_topic, self.review_topic, self.dlq_topic]

    def all(self) -> list[str]:
        return [
            self.samples_topic,
            self.predictions_topic,
            self.review_topic,
            self.labels_topic,
            self.models_topic,
            self.dlq_topic,
            self.retrain_requests_topic,
        ]


class ServingSettings(Section):
    """What the scorer serves (model file or registry, how to read the graph) and how it
    works through the stream (batch size, record size limit, threads)."""

    model: Optional[Path] = None
    """ONNX classifier to serve (a plain file; use registry for hot-swap)."""
    registry: Optional[str] = None
    """Model registry: a directory or s3://bucket/prefix (endpoint and credentials from the AWS
    environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...); the scorer serves its CURRENT and hot-swaps."""
    registry_cache: Optional[Path] = None
    """Where an s3:// registry's verified model bytes are cached (default: ~/.cache/triage/registry)."""
    reference: Optional[Path] = None
    """Reference data (npz with X[,y], or CSV) to fit the outlier detector at start-up."""
    classes: Optional[str] = None
    """Comma-separated class names, in output order, when the model does not carry them."""
    input_name: Optional[str] = None
    """Name of the model's feature input, when the graph has several inputs."""
    output_name: Optional[str] = None
    """Name of the probability (or logit) output, when it cannot be told from the graph."""
    feature_count: Optional[int] = Field(None, ge=1)
    """Feature count, when the model's input shape leaves it open and no reference is given."""
    output_kind: Literal["probabilities", "logits"] = "probabilities"
    """What the chosen output holds; logits get a softmax."""
    model_version: Optional[str] = None
    """Version stamped on outputs when serving a plain --model file (default: file-<sha256[:12]>)."""
    ort_threads: int = Field(1, ge=0)
    """onnxruntime intra-op threads (0 = onnxruntime's choice). One is best for small models."""

    registry_poll_s: float = Field(30.0, gt=0.0)
    """Scorers re-check the registry's CURRENT this often, in case a model event was missed."""
    outlier_quantile: float = Field(0.995, gt=0.5, lt=1.0)
    """Quantile of reference outlier distances used as the outlier threshold."""
    batch_size: int = Field(1000, ge=1, le=100_000)
    """Most records taken per poll and scored in one ONNX run."""
    poll_timeout_ms: int = Field(200, ge=1)
    """How long one poll waits for records."""
    max_message_bytes: int = Field(1_000_000, ge=64)
    """Records larger than this are dead-lettered as oversized (bounds memory)."""
    blas_threads: int = Field(1, ge=0)
    """BLAS threads for numpy (outlier scoring); 0 = leave the library default. One is
    fastest for per-batch matrices this small, and spinning BLAS threads steal the cores
    the Kafka client needs."""
    workers: int = Field(1, ge=1, le=256)
    """Scorer processes in one consumer group behind one /metrics, /healthz and /readyz (use
    one per core; more than the samples topic's partitions leaves some idle). 1 = one process."""
    worker_max_restarts: int = Field(5, ge=0)
    """With workers > 1: a worker that dies is restarted with backoff; one that dies more
    often than this within worker_restart_window_s stops the whole scorer (exit 1)."""
    worker_restart_window_s: float = Field(60.0, gt=0.0)
    """The window over which worker_max_restarts counts a worker's restarts."""


    @field_validator("registry", mode="before")
    @classmethod
    def _registry_location(cls, value: Any) -> Any:
        """A directory or s3://bucket/prefix; any other URL is refused (it would become a
        local directory named after its scheme)."""
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, str):
            from triage.errors import ConfigError
            from triage.lifecycle.objectstore import parse_location

            try:
                parse_location(value)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("classes")
    @classmethod
    def _classes_not_blank(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not [c for c in value.split(",") if c.strip()]:
            raise ValueError("classes must name at least one class, e.g. --classes cat,dog")
        return value

    @property
    def class_names(self) -> Optional[list[str]]:
        if self.classes is None:
            return None
        return [c.strip() for c in self.classes.split(",") if c.strip()]


class PolicySettings(Section):
    """How scores become routing decisions: acquisition, thresholds, risk control, gate,
    review-queue hygiene and the annotation budget."""

    policy: PolicyName = "threshold"
    """threshold: fixed --uncertainty-threshold. review-rate: keep the review share near
    --review-rate. risk: auto-accept only what held-out labels certify (error <= --risk-alpha
    with probability >= 1 - --risk-delta); needs held-out labels (--reference with y)."""
    acquisition: Acquisition = "margin"
    """Uncertainty measure: least-confidence (1-p1), margin (1-(p1-p2)) or entropy (normalized)."""
    review_order: ReviewOrder = "priority"
    """Order of a batch's review requests (their priority, which annotators work by):
    priority (most uncertain first), diverse (most uncertain first, spread over clusters of
    the batch's uncertain rows) or badge (k-means++ over gradient embeddings)."""
    uncertainty_threshold: float = Field(0.5, ge=0.0, le=1.0)
    """Samples whose uncertainty (0..1, higher = less sure) exceeds this go to review."""
    audit_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Random fraction of auto-accepted samples also sent to review with reason audit."""
    audit_recent_labels: int = Field(200, ge=20, le=100_000)
    """Labelled audit samples per version behind the audit consumer's recent accuracy interval (what
    TriageEstimateDisagreesWithAudit compares): a concept shift on a long-serving version shows there first.
    Also the labels behind ``triage monitor``'s estimate correction."""
    seed: int = 0
    """Seed of every random routing decision (audit sampling)."""

    review_rate: float = Field(0.05, gt=0.0, lt=1.0)
    """Target share of samples sent to review under --policy review-rate."""
    review_rate_window: int = Field(2000, ge=50, le=1_000_000)
    """Samples in the review-rate controller's sliding window: after a drift the rate is back
    on target within about this many samples."""
    risk_alpha: float = Field(0.05, gt=0.0, lt=1.0)
    """Largest tolerated error rate among auto-accepted predictions (--policy risk)."""
    risk_delta: float = Field(0.1, gt=0.0, lt=1.0)
    """Allowed probability that the risk bound fails (held-out sample was unlucky)."""
    risk_mondrian: bool = False
    """Certify a separate threshold per predicted class (each class's error <= alpha)."""
    risk_live_control: bool = False
    """`triage audit --registry`: move the scorers' risk threshold to the one the live audit
    labels certify (docs/operations/live-risk.md): tighten when the live bound exceeds alpha
    (to no auto-accept when nothing certifies), loosen only on --risk-live-min-rows rows."""
    risk_live_min_rows: int = Field(0, ge=0)
    """Audit rows the live bound needs before it loosens the threshold, or tightens on an upper
    bound alone (0: the fewest on which one error still certifies alpha; 77 at 0.05 / 0.1)."""
    calibration: Literal["auto", "temperature", "platt", "isotonic", "none"] = "auto"
    """Calibration fitted on held-out labels at start-up: auto picks by cross-validated log loss."""
    calibration_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    """Share of held-out labelled rows used to fit calibration; the rest certify the risk
    threshold, the gate metrics and the after-calibration ECE (kept apart so the bound is honest)."""
    gate_min_accuracy: Optional[float] = Field(None, ge=0.0, le=1.0)
    """Gate: a model version auto-accepts nothing until its held-out accuracy reaches this."""
    gate_min_coverage: Optional[float] = Field(None, ge=0.0, le=1.0)
    """Gate: ... until the risk bound holds at a held-out coverage of at least this."""
    gate_mode: Literal["review", "provisional"] = "review"
    """While the gate is closed: send would-be-accepted samples to review (reason gate), or
    publish them to predictions marked provisional: true."""
    dedupe_window: int = Field(0, ge=0, le=1_000_000)
    """Recent review requests remembered for near-duplicate suppression (0 = off)."""
    dedupe_radius: float = Field(0.5, gt=0.0)
    """Near-duplicate cell width, in reference standard deviations along random projections."""
    review_class_quota: Optional[float] = Field(None, gt=0.0, le=1.0)
    """Largest share of recent review requests one predicted class may take (None = no quota)."""
    annotation_capacity: Optional[float] = Field(None, gt=0.0)
    """Labels per hour the annotators can produce; turns on the review-budget controller."""
    budget_backlog_hours: float = Field(1.0, gt=0.0)
    """Review backlog (in hours of annotation capacity) the budget controller aims for."""
    backlog_poll_s: float = Field(30.0, gt=0.0)
    """How often the scorer re-reads the review/labels topics to measure the backlog."""



class RetrainSettings(Section):
    """The retrain job: its consumer group, model family and promotion rule."""

    retrain_group_id: str = "triage-retrain"
    """Consumer group of the retrain job on the labels topic."""
    model_family: Literal["auto", "logreg", "mlp", "gb"] = "auto"
    """scikit-learn model family trained by `triage train` and `triage retrain`: logreg, mlp
    (one regularized hidden layer), gb (gradient boosting) or auto, which keeps the family with
    the lowest temperature-scaled log loss: under 200 rows logreg without comparing; from 200
    rows logreg or mlp, compared on 5-fold out-of-fold predictions; from 500 rows logreg, mlp
    or gb, compared on a 20% validation split. A retrain keeps auto's choice until the
    training data has doubled."""
    min_new_labels: int = Field(20, ge=1)
    """Retrain only when at least this many new labels were folded since the current model."""
    retrain_tolerance: float = Field(0.0, ge=0.0, le=1.0)
    """Promote a candidate unless its held-out accuracy is worse than the current model's by more than this."""
    gate_significance: float = Field(0.05, ge=0.0, le=1.0)
    """A candidate's drop counts only when an exact one-sided McNemar test on the rows the two
    models disagree on shows it at this level (1 = any drop counts, as a plain comparison)."""
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    """Share of `triage train` data kept as the fixed evaluation holdout."""
    eval_label_share: int = Field(20, ge=2)
    """One in this many new labels (chosen by a hash of the sample id) is reserved for evaluation,
    never trained on. The gate's main evidence is the holdout; reserving more costs the loop its
    most informative labels (1 in 5 needed ~20% more labels to reach 98% of full accuracy)."""
    accept_new_classes: bool = False
    """Accept labels naming classes the model does not know (otherwise they go to the DLQ)."""
    certification: Literal["strict", "cross-fit"] = "strict"
    """How `triage train` and retrains certify the risk threshold. strict: on held-out rows
    that the served model, its calibrator and every choice made for it never saw (the
    guarantee holds as stated). cross-fit: also on the training rows scored out of fold by
    fold models; more rows and more coverage, but an approximation (the fold models are not
    the served model; measured violation rate in docs/guide/risk.md)."""
    cross_fit_folds: int = Field(5, ge=0, le=20)
    """Fold models under --certification cross-fit (0 = the holdout alone, as strict)."""


BLOCKED_EXIT_S = 240.0


class OperationsSettings(Section):
    """The /metrics, /healthz and /readyz server, logging, and how long a blocked loop waits."""

    metrics_host: str = "0.0.0.0"
    """Bind address of the /metrics, /healthz and /readyz server."""
    metrics_port: int = Field(8000, ge=0, le=65535)
    """Port of the /metrics, /healthz and /readyz server (0 = pick a free port)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level."""
    blocked_exit_s: float = Field(BLOCKED_EXIT_S, gt=0.0)
    """Seconds a loop may hold a batch uncommitted because of a fault of the environment (full
    or read-only disk, refused topic, unreachable broker or dependency, a handler failing on
    every record) before the process exits 1 so the orchestrator restarts it. Keep it under
    max_poll_interval_ms."""



class LabelStudioSettings(Section):
    """The Label Studio bridge (``triage label-studio``): where Label Studio is, which project,
    and how its webhooks reach the bridge."""

    label_studio_url: str = Field("http://127.0.0.1:8080", json_schema_extra=_flag("--url"))
    """Base URL of Label Studio."""
    label_studio_api_key: Optional[SecretStr] = Field(None, json_schema_extra=_flag("--api-key"))
    """Label Studio API key: a legacy token or a personal access token (secret; never logged)."""
    label_studio_project_id: Optional[int] = Field(None, ge=1, json_schema_extra=_flag("--project-id"))
    """The Label Studio project to feed (else --project-title)."""
    label_studio_project_title: str = Field("triage review", json_schema_extra=_flag("--project-title"))
    """Title of the project to use, created with a labelling config from the model's classes when missing."""
    label_studio_webhook_host: str = Field("0.0.0.0", json_schema_extra=_flag("--webhook-host"))
    """Bind address of the webhook listener."""
    label_studio_webhook_port: int = Field(8091, ge=0, le=65535, json_schema_extra=_flag("--webhook-port"))
    """Port of the webhook listener (POST /webhook; 0 = pick a free port)."""
    label_studio_webhook_url: Optional[str] = Field(None, json_schema_extra=_flag("--webhook-url"))
    """The URL Label Studio calls for annotation events (default: http://127.0.0.1:<webhook port>/webhook)."""
    label_studio_webhook_secret: Optional[SecretStr] = Field(
        None, json_schema_extra=_flag("--webhook-secret"))
    """Shared secret Label Studio sends in the X-Triage-Webhook-Secret header (default: a random one per start)."""
    label_studio_reconcile_s: float = Field(30.0, gt=0.0, json_schema_extra=_flag("--reconcile-s"))
    """Seconds between reconciles: the tasks changed since the last one are re-read, so a lost webhook is caught."""
    label_studio_full_reconcile_s: float = Field(600.0, gt=0.0, json_schema_extra=_flag("--full-reconcile-s"))
    """Seconds between full reconciles (every task re-read; a task missing from it is fetched, and only a 404 retracts its labels)."""
    label_studio_group_id: str = Field("triage-label-studio", json_schema_extra=_flag("--bridge-group-id"))
    """Consumer group of the bridge on the review topic."""


class MonitorSettings(Section):
    """``triage monitor``: label-free accuracy estimation and drift alarms on the scored outputs
    (docs/guide/monitoring.md)."""

    monitor_window: int = Field(2000, ge=50, le=100_000)
    """Samples per version in the sliding window of the label-free accuracy estimate."""
    drift_ert_samples: float = Field(1_000_000.0, gt=100.0)
    """Expected samples between false drift alarms on in-distribution traffic, over all detectors of a version together."""
    drift_reference_samples: int = Field(5000, ge=100, le=1_000_000)
    """A version's first samples, its drift reference (more: fewer false alarms from reference noise)."""
    drift_k: float = Field(0.25, gt=0.0, le=2.0)
    """CUSUM allowance, in standard deviations of the normal score: shifts of about twice this are detected fastest."""
    estimate_level: float = Field(0.95, gt=0.5, lt=1.0)
    """Level of the estimate's sampling-error band."""
    accuracy_floor: Optional[float] = Field(None, gt=0.0, lt=1.0)
    """Acceptable accuracy: when even the band's upper end is below it, a retrain is requested (unset: never)."""
    retrain_request_interval_s: float = Field(600.0, ge=0.0)
    """Seconds between two retrain requests for one version (alarms in between are counted, not sent)."""
    monitor_state_dir: Path = Path("monitor-state")
    """Directory of the monitor's checkpoint (its windows, references and detectors with the offsets they cover)."""
    monitor_checkpoint_s: float = Field(10.0, gt=0.0)
    """Seconds between checkpoints; offsets are committed only up to the last checkpoint."""
    monitor_max_hold_s: int = Field(60, ge=0)
    """Seconds of event time a scored sample may wait for slower or silent partitions before it is folded in
    (outputs are merged back into scoring order before the drift tests see them)."""
    monitor_idle_grace_s: float = Field(2.0, ge=0.0)
    """On an idle stream, seconds a sample read waits for the rest of its scored batch, still in flight to other
    partitions, before it is folded in."""
    monitor_bucket_ms: int = Field(1000, ge=1, le=60_000)
    """Milliseconds of produce time whose samples count as one scored batch: they reach the drift tests in random order."""
    monitor_group_id: str = "triage-monitor"
    """Consumer group of the monitor on the predictions and review topics (run one replica)."""


class QualitySettings(Section):
    """Label quality (docs/guide/label-quality.md): how many annotators a review request gets,
    how their labels become one, and which stored labels go back for review. The defaults are
    what `triage simulate --annotators` measured to pay for its labels."""

    consensus_share: float = Field(0.2, ge=0.0, le=1.0)
    """Share of each batch of review requests (the most uncertain first) that gets consensus_size annotators (0 = one each)."""
    consensus_size: int = Field(2, ge=1, le=10)
    """Annotators first asked for a consensus request."""
    consensus_tiebreak: bool = True
    """Ask one more annotator while a sample's labels have no strict majority (up to consensus_max_annotators)."""
    consensus_max_annotators: int = Field(3, ge=1, le=10)
    """Most annotators one sample is ever shown to."""
    consensus_doubt_below: float = Field(0.0, ge=0.0, le=1.0)
    """A lone label from an annotator whose estimated accuracy is below this gets a second opinion (0 = never)."""
    aggregation: Literal["majority", "weighted", "dawid-skene"] = "weighted"
    """How a sample's labels become one: majority, majority weighted by each annotator's estimated accuracy, or
    Dawid-Skene (crowd-kit)."""
    relabel_share: float = Field(0.1, ge=0.0, le=1.0)
    """Share of each retrain step's label budget spent re-reviewing labels cleanlab flags as likely wrong (reason
    relabel; they stay out of training until reviewed; 0 = off)."""
    annotator_metrics_top: int = Field(50, ge=1, le=1000)
    """Annotators named in the retrain job's per-annotator metrics (the most active); the rest are exported as other."""
    annotator_accuracy_alert_below: float = Field(0.7, ge=0.0, le=1.0)
    """TriageAnnotatorAccuracyLow fires when an annotator's estimated accuracy against the aggregate is below this
    (exported as triage_annotator_accuracy_alert_below)."""

    @model_validator(mode="after")
    def _sizes(self) -> "QualitySettings":
        if self.consensus_size > self.consensus_max_annotators:
            raise ValueError(f"consensus_size {self.consensus_size} > consensus_max_annotators "
                             f"{self.consensus_max_annotators}")
        return self


SECTIONS: dict[str, type[Section]] = {
    "connection": ConnectionSettings,
    "topics": TopicSettings,
    "serving": ServingSettings,
    "policy": PolicySettings,
    "retrain": RetrainSettings,
    "operations": OperationsSettings,
    "label_studio": LabelStudioSettings,
    "monitor": MonitorSettings,
    "quality": QualitySettings,
}


class Settings:
    """Every section, built together. ``Settings(**flat)`` takes flat field names (as flags and
    ``TRIAGE_*`` variables spell them); anything not given is read from the environment."""

    __slots__ = ("connection", "topics", "serving", "policy", "retrain", "operations", "label_studio", "monitor", "quality")

    connection: ConnectionSettings
    topics: TopicSettings
    serving: ServingSettings
    policy: PolicySettings
    retrain: RetrainSettings
    operations: OperationsSettings
    label_studio: LabelStudioSettings
    monitor: MonitorSettings
    quality: QualitySettings

    def __init__(self, **flat: Any) -> None:
        unknown = set(flat) - set(FIELD_SECTION)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        for name, cls in SECTIONS.items():
            given = {k: v for k, v in flat.items() if FIELD_SECTION[k] == name}
            object.__setattr__(self, name, cls(**given))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are immutable; use replace(**changes)")

    @staticmethod
    def fields() -> Iterator[tuple[str, FieldInfo]]:
        """(flat name, field) of every setting, section by section."""
        for cls in SECTIONS.values():
            yield from cls.model_fields.items()

    def flat(self, *, exclude_none: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SECTIONS:
            out.update(getattr(self, name).model_dump(exclude_none=exclude_none))
        return out

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some flat fields changed (validated like the original)."""
        unknown = set(changes) - set(FIELD_SECTION)
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        new = object.__new__(Settings)
        for name in SECTIONS:
            section = getattr(self, name)
            mine = {k: v for k, v in changes.items() if FIELD_SECTION[k] == name}
            object.__setattr__(new, name, type(section)(**{**section.model_dump(), **mine}) if mine else section)
        return new

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in SECTIONS) + ")"


FIELD_SECTION: dict[str, str] = {f: name for name, cls in SECTIONS.items() for f in cls.model_fields}


def env_var(name: str) -> str:
    """The environment variable of the Settings field ``name``: ``TRIAGE_NAME``."""
    return ENV_PREFIX + name.upper()


def flag_of(name: str) -> str:
    """The flag of the Settings field ``name``: ``--field-name`` unless the field names its own."""
    section = SECTIONS[FIELD_SECTION[name]]
    extra = section.model_fields[name].json_schema_extra
    custom = extra.get("flag") if isinstance(extra, dict) else None
    return str(custom) if custom else "--" + name.replace("_", "-")
