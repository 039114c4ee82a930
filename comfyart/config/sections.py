"""The sections of the configuration that concern the daemon itself: where it listens, Redis, auth and quotas,
request limits, tracking, scheduling, workflows, outputs, webhooks, the dashboard. (The backends' sections are in
``fleet``.)"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from comfyart.policy.scheduling import Order, Strategy


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(Section):
    """Where the API listens."""

    host: str = Field("127.0.0.1", description="listen address; with auth off only loopback is allowed")
    port: int = Field(8100, ge=0, le=65535, description="listen port")
    public_url: str | None = Field(None, description="how clients reach this daemon (e.g. behind a proxy), for "
                                                        "the output URLs in webhooks; default http://host:port")

    def public_base(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class DashboardConfig(Section):
    """The web dashboard at ``/`` and the history its charts draw."""

    enabled: bool = Field(True, description="serve the dashboard at / (its files hold no data: the API it calls "
                                            "checks credentials)")
    stats_interval_s: float = Field(10.0, ge=0.1, le=3600, description="how often queue depth and finished tasks "
                                                                       "are sampled for the charts")
    stats_keep_s: float = Field(24 * 3600.0, ge=60, le=30 * 24 * 3600,
                                description="how long samples are kept (in Redis, about 100 bytes each)")


class ComfyUIConfig(Section):
    """ComfyUI's own web editor, and what the prompts sent to backends ask of them."""

    editor: bool = Field(True, description="serve ComfyUI's web editor (the comfyui-frontend-package wheel) at "
                                           "/comfy/, with the ComfyUI API under it")
    preview_method: Literal["auto", "latent2rgb", "taesd", "none", "default"] = Field(
        "auto", description="live previews for a prompt that does not choose (extra_data.preview_method; the "
                            "editor sends its own setting): newer ComfyUI sends previews only when asked; 'default' "
                            "leaves it to the backend's --preview-method, 'none' saves the decoding on the GPU")


class ClusterConfig(Section):
    """Several comfyart processes (replicas) on one Redis: every replica serves the API, one leader at a time
    runs the loops that must be single (the pool, the dispatcher, the tracker, webhooks, stats, retention)."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,80}$",
                             description="this replica's name among the others; omitted: HOST:PORT")
    advertise_url: str | None = Field(None, pattern=r"^https?://[^/\s]+/?$",
                                      description="where the other replicas reach this one (forwarded admin "
                                                  "requests, files); omitted: http://HOST:PORT, with this "
                                                  "machine's host name when server.host listens everywhere. "
                                                  "Never server.public_url: behind a load balancer that reaches "
                                                  "any replica")
    lease_s: float = Field(5.0, ge=0.5, le=300, description="how long a leader's lease lasts unrenewed: a standby "
                                                            "takes over this long after a leader dies")
    renew_interval_s: float = Field(1.0, gt=0, le=60, description="how often the leader renews its lease; under "
                                                                 "lease_s / 2")
    standby_poll_s: float = Field(0.25, gt=0, le=60, description="how often a standby tries to take the lease")
    heartbeat_s: float = Field(2.0, gt=0, le=60, description="how often a replica says it is alive; gone after "
                                                            "three missed")
    replicated: bool | None = Field(None, description="task events, ComfyUI frames and previews go through Redis "
                                                      "to every replica; omitted: on with redis.url (a Redis "
                                                      "others may share), off with the embedded one. Off saves a "
                                                      "stream entry per change for one process on its own Redis")
    events_kept: int = Field(100_000, ge=1000, le=10_000_000,
                             description="task events kept in Redis for replicas to catch up after a blip "
                                         "(about 300 bytes each)")
    shared_files: bool = Field(False, description="data_dir's outputs/, inputs/ and assets/ are one filesystem "
                                                  "shared by every replica: no replica fetches a file from another")
    file_cache_mb: int = Field(2048, ge=1, description="copies of files other replicas hold, kept under "
                                                      "data_dir/cache to serve them again; the least recently used "
                                                      "go first past this size")

    @model_validator(mode="after")
    def _renewed_in_time(self) -> ClusterConfig:
        if self.renew_interval_s * 2 > self.lease_s:
            raise ValueError(f"cluster.renew_interval_s ({self.renew_interval_s:g}) must be at most half of "
                             f"cluster.lease_s ({self.lease_s:g}): one late renewal must not lose the lease")
        return self


class ApiV2Config(Section):
    """Comfy API v2 (``/api/v2``: the official Comfy SDK's jobs and assets API) for the whole fleet."""

    job_retention_s: int = Field(7 * 24 * 3600, ge=60, le=365 * 24 * 3600,
                                 description="how long a finished v2 job and its outputs are kept; then the job "
                                             "answers 'expired' and its outputs are removed")
    max_upload_bytes: int = Field(1 << 30, ge=1024, description="one uploaded asset (streamed to disk, never held "
                                                               "in memory); larger answers 413")
    max_streams_per_key: int = Field(8, ge=1, le=1000, description="event streams (SSE) one key may hold open; "
                                                                  "more answer 429 too_many_streams")


class WebhooksConfig(Section):
    """Deliveries of finished tasks to their ``webhook`` URL."""

    secret: SecretStr | None = Field(None, description="signs each delivery: X-Comfyart-Signature is "
                                                          "sha256=HMAC-SHA256(secret, body) in hex")
    timeout_s: float = Field(10.0, gt=0, description="for one delivery attempt")
    max_attempts: int = Field(8, ge=1, le=100, description="attempts in all, the first included")
    backoff_s: float = Field(1.0, gt=0, description="wait before the 2nd attempt; doubled each time after (each "
                                                    "wait less up to a fifth at random)")
    backoff_max_s: float = Field(600.0, gt=0, description="the longest wait between two attempts")
    allow_private_targets: bool = Field(False, description="let client keys' webhooks reach private, loopback and "
                                                           "link-local addresses (admins' always may)")


class ApiKeyConfig(Section):
    """An API key of the configuration."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", description="the key's owner id is "
                                                                                "config:<name>")
    role: Literal["admin", "client"] = Field("client", description="admin: everything; client: its own tasks")
    key: SecretStr | None = Field(None, description="the key itself (any string of 24 characters or more)")
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                                      description="or its SHA-256 in hex, to keep the key out of the file")
    max_queued: int | None = Field(None, ge=0, description="overrides auth.quotas.max_queued for this key")
    submissions_per_minute: float | None = Field(None, ge=0, description="overrides the quota's rate")

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"key {self.name}: give either key or key_sha256")
        if self.key is not None and len(self.key.get_secret_value()) < 24:
            raise ValueError(f"key {self.name}: a key needs 24 characters or more")
        return self


class QuotaConfig(Section):
    """Each client key's limits (a key may set its own); admins have none."""

    max_queued: int = Field(1000, ge=0, description="a client's tasks pending or running at once; 0: no limit")
    submissions_per_minute: float = Field(600.0, ge=0, description="a client's sustained submission rate; 0: no "
                                                                   "limit")
    burst: int = Field(60, ge=1, description="submissions a client may make at once above the rate")


class AuthConfig(Section):
    """Who may call the API: keys, roles, the admin user, quotas, signed links."""

    enabled: bool | None = Field(None, description="omitted: on when any key or the admin user is configured")
    keys: list[ApiKeyConfig] = Field(default_factory=list, description="more are made with `comfyart keys create` "
                                                                        "or POST /api/keys")
    admin_user: str | None = Field(None, description="basic-auth user with the admin role (the dashboard)")
    admin_password: SecretStr | None = Field(None, description="12 characters or more; better given as "
                                                                  "COMFYART_AUTH__ADMIN_PASSWORD")
    allow_unauthenticated: bool = Field(False, description="serve with auth off on an address other than "
                                                           "loopback: anyone who reaches it controls the pool")
    url_secret: SecretStr | None = Field(None, description="signs shareable output URLs; omitted: a random "
                                                              "one kept in Redis")
    signed_url_ttl_s: int = Field(24 * 3600, ge=60, le=30 * 24 * 3600,
                                  description="default life of a signed output URL (webhooks carry them)")
    session_ttl_s: int = Field(7 * 24 * 3600, ge=60, le=365 * 24 * 3600,
                               description="life of a browser session opened at /comfy/signin (the editor)")
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)

    @model_validator(mode="after")
    def _user_and_password(self) -> AuthConfig:
        if (self.admin_user is None) != (self.admin_password is None):
            raise ValueError("auth.admin_user and auth.admin_password go together")
        if self.admin_password is not None and len(self.admin_password.get_secret_value()) < 12:
            raise ValueError("auth.admin_password needs 12 characters or more")
        names = [k.name for k in self.keys]
        if len(names) != len(set(names)):
            raise ValueError("auth key names must be unique")
        return self

    @property
    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return bool(self.keys) or self.admin_user is not None


class LimitsConfig(Section):
    """What one request may send."""

    max_body_bytes: int = Field(32 << 20, ge=1024, description="a request body (JSON); larger answers 413")
    max_upload_bytes: int = Field(64 << 20, ge=1024, description="an uploaded image")
    max_json_depth: int = Field(64, ge=4, le=1000, description="nesting of any JSON a request sends")
    max_graph_nodes: int = Field(5000, ge=1, description="nodes in one prompt graph")
    userdata_max_bytes: int = Field(64 << 20, ge=1024, description="a user's saved files and settings (the web "
                                    "editor's userdata) in all; more answers 413")
    userdata_max_file_bytes: int = Field(16 << 20, ge=1024, description="one userdata file; larger answers 413")


class RedisConfig(Section):
    """Where task records, the queue, workflows and keys live."""

    url: str | None = Field(None, description="omitted: an embedded Redis under data_dir")
    prefix: str = Field("comfyart", description="prefix of every key comfyart writes")


class TrackingConfig(Section):
    """Following prompts on their backends."""

    silence_s: float = Field(10.0, gt=0, description="a busy backend's socket silent this long: check /history")
    submit_timeout_s: float = Field(30.0, gt=0, description="for POST /prompt and other short requests")
    download_timeout_s: float = Field(300.0, gt=0, description="for one output file")
    task_timeout_s: float = Field(3600.0, gt=0, description="a prompt unfinished this long after its submission is "
                                                             "interrupted and retried elsewhere")
    max_retries: int = Field(2, ge=0, description="retries of a task after faults of its backend (lost, timed "
                                                  "out, unreachable), each on another backend where one is free")
    claim_lease_s: float = Field(30.0, gt=0, description="a task claimed from the queue but not submitted within "
                                                         "this long goes back to the queue")
    progress_interval_s: float = Field(0.25, gt=0, le=10, description="a running task's progress is written to its "
                                                                      "record at most this often")


class SchedulerConfig(Section):
    """Which task goes to which backend, and when (changeable at run time: PUT /api/scheduler)."""

    strategy: Strategy = Field(Strategy.LEAST_BUSY, description="least_busy, round_robin, weighted or affinity")
    order: Order = Field(Order.FIFO, description="within a priority level: fifo, or longest_first (the most "
                                                 "expensive graphs of the window first: shortest makespan)")
    prefetch: int = Field(1, ge=0, le=16, description="prompts queued on a busy backend beyond the running one")
    lookahead: int = Field(32, ge=1, le=1000, description="queued tasks considered at each dispatch: tasks "
                                                          "behind one that cannot run yet go ahead")
    priority_ageing_s: float = Field(300.0, ge=0, description="a waiting task gains one priority level per this "
                                                              "long; 0: strict priority")
    affinity_max_skips: int = Field(16, ge=0, description="affinity may run later tasks before one this many times")


class WorkflowsConfig(Section):
    """Stored workflows loaded from files."""

    directory: Path | None = Field(
        None, description="workflow files loaded at start-up (NAME-api.json, NAME.json, NAME.params.yaml); "
                          "newer edits made through the API are kept")


class S3Config(Section):
    """Object storage for outputs."""

    endpoint_url: str | None = Field(None, description="of an S3-compatible service; omitted: AWS")
    bucket: str = Field(description="must exist; checked at start-up")
    prefix: str = Field("comfyart/", description="before every object key (then TASK_ID/FILENAME)")
    region: str | None = Field(None, description="omitted: boto3's usual sources")
    access_key_id: str | None = Field(None, description="omitted: boto3's usual sources (environment, profile)")
    secret_access_key: SecretStr | None = Field(None, description="better given as "
                                                                     "COMFYART_OUTPUTS__S3__SECRET_ACCESS_KEY")
    presign_expires_s: int = Field(7 * 24 * 3600, ge=60, le=7 * 24 * 3600,
                                   description="life of the presigned URLs put in task records")


class OutputsConfig(Section):
    """Where downloaded outputs are kept."""

    storage: Literal["local", "s3"] = Field("local", description="local: under data_dir/outputs; s3: object storage "
                                                                 "(each file is downloaded, uploaded, then removed)")
    s3: S3Config | None = Field(None, description="needed with storage: s3")

    @model_validator(mode="after")
    def _s3_given(self) -> OutputsConfig:
        if self.storage == "s3" and self.s3 is None:
            raise ValueError("outputs.storage s3 needs an outputs.s3 section (bucket, endpoint_url, credentials)")
        return self
