"""Every Redis key comfyart writes, as a function of one prefix (``redis.prefix``, ``P`` below): the one key schema.

Tasks (``store.tasks``, ``store.queue``, ``store.comfy_index``, ``store.webhooks``):
    P:task:{id}             hash: the task record (JSON-encoded values for prompt, params, outputs, node_errors)
    P:tasks                 zset: every task id scored by created_ms (newest first listing)
    P:tasks:{status}        zset: task ids in that status, scored by created_ms; none for ``pending``: a pending
                            task is in the queue, the claims or the active set already, and a second index of a
                            long queue would cost a tenth of its memory
    P:queue                 zset: pending task ids scored by ``policy.priority.queue_score`` (priority, then age),
                            lowest first; the dispatcher reads a window of its head and claims the ids it assigns
    P:queue:list            list: the queue as comfyart 0.1 kept it; migrated to P:queue at start-up
    P:claims                zset: ids taken from the queue but not yet submitted, scored by their lease's end;
                            an expired lease (and every claim at start-up) puts the id back in the queue
    P:active                set: ids submitted to a backend and not yet final
    P:prompt:{prompt_id}    string: the task id that owns a ComfyUI prompt id
    P:comfy:prompt:{id}     string: the task id of a prompt id a client of the ComfyUI-compatible API knows
    P:comfy:prompts         zset: those prompt ids scored by created_ms: that API's history and jobs
    P:comfy:open            zset: ids of that API's tasks not yet final, scored by their queue number
    P:comfy:number          counter: that API's queue numbers
    P:comfy:everyone        zset: with auth on, the task ids of every owner's prompts of that API, scored by
                            created_ms: what an admin's /api/jobs lists (kept with each owner's own index)
    P:comfy:anyone:{id}     string: the task id of the latest of those prompts with that prompt id, whoever the
                            owner: what an admin's /api/jobs/{id} finds
    P:webhooks              zset: ids of final tasks whose webhook is yet to be delivered, scored by when the
                            next attempt is due (ms); added by the transition to a final status itself, so a
                            crash cannot lose a delivery
    P:owner:{o}:tasks       zset: the tasks of one API key (auth on), scored by created_ms: a client's listing
    P:owner:{o}:open        set: its tasks not final yet: its quota; a final status leaves it in the transition
    P:owner:{o}:rate        string: the theoretical arrival time (ms) of its submission rate limit (GCRA,
                            ``store.quotas``)
    P:owner:{o}:comfy:...   the ComfyUI-compatible API's prompt ids and history above, one namespace per key:
                            prompt ids and client ids are the callers' own and may collide
Status changes go through one Lua script that checks the current status, so a task never leaves a final status and
never completes twice. Claiming (queue -> claims) and recording a submission (claims -> active) are Lua scripts
too: a task is always in exactly one of queue, claims and active, or final.

Workflows (``store.workflows``):
    P:workflows                 set: the names of the stored workflows
    P:workflow:{name}           hash: the current version's metadata (version, sha, source, times, description,
                                params as JSON): enough to list workflows without reading their graphs
    P:workflow-versions:{name}  hash: version -> the definition as JSON; immutable once written
    P:workflow-seq:{name}       counter of versions; survives a delete so a re-created workflow never reuses a
                                version number that queued tasks may still name

The pool and the scheduler (``store.pool``):
    P:static-backends       hash: name -> {"url", "tags", "weight"} (JSON; a bare URL from 0.1) of static backends
                            registered through the API
    P:pool-scale            hash: min_containers, max_containers, target set through the API (absent: config)
    P:scheduler             hash: scheduler settings changed through the API (JSON values; absent: config)
    P:client-id             string: the backend WebSocket client id; a restarted daemon keeps it, so the events of
                            prompts submitted before the restart still reach it

Callers (``store.api_keys``):
    P:keys                  hash: key id -> JSON record (name, role, sha256, created_ms, revoked_ms, quotas)
    P:url-secret            string: the secret output URLs are signed with, made once when the config gives none
    P:session:{sha256}      string, expiring after auth.session_ttl_s: a browser session (store.sessions), under
                            the SHA-256 of its cookie (a dump of Redis gives no cookie away); JSON naming the
                            credential it was opened with (``auth.SessionRef``), never the credential itself
    P:signin:{address}      string, expiring: the sign-in attempts of one address (store.quotas.sign_in_attempt)

Idempotency-Keys of ``POST /api/v2/jobs`` (``store.idempotency``, values as ``policy.idempotency`` says):
    P:owner:{o}:idem:{key}  string, expiring 24 h after its claim: ``pending:<claim token>`` while the submission is
                            in progress or its outcome unknown, ``job:<task id>`` once it made a job. Owner ids hold
                            no ":idem:" (key ids are base32, config ids ``config:<name without colons>``), so two
                            owners' keys never meet. ``P:idem:{key}`` when auth is off: one shared space

The web editor's userdata (``store.userdata``: ComfyUI's user manager, one space per API key; ``P:userdata:...``
when auth is off, one shared space):
    P:owner:{o}:userdata:files  hash: path -> the file's bytes (settings are the file comfy.settings.json)
    P:owner:{o}:userdata:meta   hash: path -> "size created_ms modified_ms": a listing without reading the files
    P:owner:{o}:userdata:dirs   hash: directory -> how many files are below it (a directory exists while it holds
                                one; a file cannot be written where one is, nor below a file)
    P:owner:{o}:userdata:bytes  counter: the bytes of all its files, against ``limits.userdata_max_bytes``

The v2 API's assets (``store.assets``; the blobs themselves are files, ``files.assets``; ``P:assets:...`` when auth
is off, one shared space):
    P:asset:{id}                    hash: one asset (owner, hash, size, content_type, file_path, created_ms,
                                    expires_ms, job_id; '' for none), a key that expires with the asset
    P:owner:{o}:assets:blob:{hex}   zset: the ids of the owner's assets of one blob (its BLAKE3 hex digest),
                                    scored by when each expires (+inf: never): the blobs an owner may mint assets
                                    of, and its asset of the same blob and file_path that an upload returns again
    P:owner:{o}:assets:paths        hash: file_path -> the id of the owner's latest asset of that path (a graph
                                    naming ``photo.png`` loads it); an entry whose asset expired is read as none
    P:blob:{hex}:assets             zset: the ids of every owner's assets of one blob, scored by when each expires
                                    (+inf: never): the blob GC keeps a blob while one is live (``blob_assets``)

The dashboard's charts (``store.stats``):
    P:stats:samples         list: queue depth and finished tasks per interval, newest first, capped

Replicas (``store.lease``, ``store.replicas``; several ``comfyart serve`` on one Redis, one of them the leader):
    P:leader                string: "{replica} {epoch} {since_ms}", expiring with the lease (PX): who runs the
                            loops that must be single (pool, dispatcher, tracker, webhooks, stats, retention)
    P:leader:epoch          counter: the fencing epoch, raised by every election and never expiring; every
                            script a leader's loops run compares it with the epoch of the term that runs them
    P:leader:history        list: the latest elections (JSON), newest first, capped
    P:replicas              zset: replica names scored by their last heartbeat (ms)
    P:replica:{name}        hash: one replica's record (url, version, role, started, heartbeat), expiring
    P:events                stream: every task event (``store.eventlog``), when replicated; capped
    P:frames:{h}            pub/sub channel: relayed ComfyUI frames for one socket (h: sha1 of its socket key)
    P:frames:owner:{owner}  pub/sub channel: frames for every socket of an owner ('-': no owner)
    P:previews:{task}       pub/sub channel: a task's previews, for v2 event streams on other replicas
"""
from __future__ import annotations

from comfyart.models import TaskStatus


class Keys:
    """The keys of one prefix. Fixed keys are attributes, keys that name something are methods."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        p = prefix
        self.task_prefix = f"{p}:task:"  # + task id: a record (Lua scripts build record keys from it)
        self.tasks = f"{p}:tasks"
        self.queue = f"{p}:queue"
        self.legacy_queue = f"{p}:queue:list"
        self.claims = f"{p}:claims"
        self.active = f"{p}:active"
        self.prompt_prefix = f"{p}:prompt:"
        self.comfy_open = f"{p}:comfy:open"
        self.comfy_number = f"{p}:comfy:number"
        self.comfy_everyone = f"{p}:comfy:everyone"
        self.webhooks = f"{p}:webhooks"
        self.owner_prefix = f"{p}:owner:"  # + owner + ':open' in the transition script
        self.workflows = f"{p}:workflows"
        self.static_backends = f"{p}:static-backends"
        self.pool_scale = f"{p}:pool-scale"
        self.scheduler = f"{p}:scheduler"
        self.client_id = f"{p}:client-id"
        self.api_keys = f"{p}:keys"
        self.url_secret = f"{p}:url-secret"
        self.session_prefix = f"{p}:session:"  # + SHA-256 of a session's cookie
        self.stats_samples = f"{p}:stats:samples"
        self.leader = f"{p}:leader"
        self.leader_epoch = f"{p}:leader:epoch"
        self.leader_history = f"{p}:leader:history"
        self.replicas = f"{p}:replicas"
        self.events = f"{p}:events"
        self.frames_prefix = f"{p}:frames:"  # + sha1 hex of a socket key, or owner:{owner or -}
        self.previews_prefix = f"{p}:previews:"  # + task id
        self.asset_prefix = f"{p}:asset:"  # + asset id: a record (the asset script builds record keys from it)

    # ------------------------------------------------------------------ tasks
    def task(self, task_id: str) -> str:
        return self.task_prefix + task_id

    def in_status(self, status: TaskStatus | None) -> str:
        """The index of one status; None: of every task."""
        return self.tasks if status is None else f"{self.tasks}:{status.value}"

    def prompt(self, prompt_id: str) -> str:
        return self.prompt_prefix + prompt_id

    def owner_tasks(self, owner: str) -> str:
        return f"{self.owner_prefix}{owner}:tasks"

    def owner_open(self, owner: str) -> str:
        return f"{self.owner_prefix}{owner}:open"

    def owner_rate(self, owner: str) -> str:
        return f"{self.owner_prefix}{owner}:rate"

    def signin_rate(self, address: str) -> str:
        return f"{self.prefix}:signin:{address}"

    def session(self, token_digest: str) -> str:
        return self.session_prefix + token_digest

    def idempotency(self, key: str, owner: str | None) -> str:
        """An Idempotency-Key of one owner (None: auth off)."""
        return f"{self.prefix}:idem:{key}" if owner is None else f"{self.owner_prefix}{owner}:idem:{key}"

    # ------------------------------------------------------------------ the ComfyUI-compatible API
    def _comfy_space(self, owner: str | None) -> str:
        return f"{self.prefix}:comfy" if owner is None else f"{self.owner_prefix}{owner}:comfy"

    def comfy_prompt(self, comfy_prompt_id: str, owner: str | None) -> str:
        return f"{self._comfy_space(owner)}:prompt:{comfy_prompt_id}"

    def comfy_prompts(self, owner: str | None) -> str:
        return f"{self._comfy_space(owner)}:prompts"

    # ------------------------------------------------------------------ the web editor's userdata
    def userdata(self, owner: str | None) -> list[str]:
        """One owner's userdata keys, in the order its scripts take them: files, meta, dirs, bytes."""
        space = f"{self.prefix}:userdata" if owner is None else f"{self.owner_prefix}{owner}:userdata"
        return [f"{space}:files", f"{space}:meta", f"{space}:dirs", f"{space}:bytes"]

    def comfy_anyone(self, comfy_prompt_id: str) -> str:
        return f"{self.prefix}:comfy:anyone:{comfy_prompt_id}"

    # ------------------------------------------------------------------ the v2 API's assets
    def replica(self, name: str) -> str:
        return f"{self.prefix}:replica:{name}"

    def asset(self, asset_id: str) -> str:
        return self.asset_prefix + asset_id

    def asset_blob(self, owner: str | None, hex_digest: str) -> str:
        """The index of one owner's assets of one blob."""
        space = f"{self.prefix}:assets" if owner is None else f"{self.owner_prefix}{owner}:assets"
        return f"{space}:blob:{hex_digest}"

    def blob_assets(self, hex_digest: str) -> str:
        """Every owner's assets of one blob: whether the blob GC may remove it."""
        return f"{self.prefix}:blob:{hex_digest}:assets"

    def asset_paths(self, owner: str | None) -> str:
        """One owner's file_path -> asset id."""
        space = f"{self.prefix}:assets" if owner is None else f"{self.owner_prefix}{owner}:assets"
        return f"{space}:paths"

    # ------------------------------------------------------------------ workflows
    def workflow(self, name: str) -> str:
        return f"{self.prefix}:workflow:{name}"

    def workflow_versions(self, name: str) -> str:
        return f"{self.prefix}:workflow-versions:{name}"

    def workflow_seq(self, name: str) -> str:
        return f"{self.prefix}:workflow-seq:{name}"
