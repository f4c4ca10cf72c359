"""Cluster mode's shared tracker: one window, cooldowns and firing episode per provider, in Redis.

`RedisTracker` sends, per ingest batch, one EVALSHA of `window.lua` for all its providers (on Redis Cluster,
one per provider, in one pipeline): the script applies each provider's rule as `window.py` does, on Redis's
clock, and resolves an episode whose deadline passed before weighing the provider's failures. Episodes
also resolve through `resolve_due`: each process keeps the deadlines of the episodes its replies showed
open, and asks the script to resolve those that passed; the script resolves each episode once, for the
one caller that finds it due. `FailoverTracker` (redis_tracker.py) puts it in front of the
in-process `MemoryTracker`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from alertd.event import FailureEvent
from alertd.redis_scripts import (
    SCRIPT,
    SCRIPT_SHA,
    Decision,
    Resolved,
    has_filters,
    reply_text,
    rule_args,
    stored_cooldowns,
)
from alertd.tracker import RECENT_SAMPLES, MemoryTracker, ProviderStats, Recorded, Trigger, counted
from alertd.window import Episode, ProviderWindow, Resolution, Rule

# The pseudo-provider the reconnect probe runs the script for (with no failures): no real provider has a
# space in its name, so its keys cannot collide with one's.
PROBE_PROVIDER = " probe"
# While an episode is known open, look again at least this often (another process may extend or resolve
# it, or die); while Redis answers, also this often when none is known (a reply may show one any time).
EPISODE_POLL = 0.5

# At most this many arguments' RESP encodings are kept (_pack); past it the cache starts over.
BULK_CACHE = 65_536

RedisClient = Redis | RedisCluster


def _shift(episode: Episode, offset: float) -> Episode:
    return Episode(
        episode.started_at - offset, episode.alerts, episode.throttled, episode.failures, episode.last_hit - offset
    )


def _resolutions(provider: str, decision: Decision, offset: float) -> list[Resolution]:
    resolved = decision.resolved
    return [] if resolved is None else [Resolution(provider, _shift(resolved, offset), decision.now - offset)]


class RedisTracker:
    """The shared window: decisions by the script in Redis; this process's own figures in `local`."""

    def __init__(
        self,
        client: RedisClient,
        rule: Rule,
        local: MemoryTracker,
        *,
        prefix: str = "alertd:",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rule_for: Callable[[str], Rule] | None = None,
    ) -> None:
        self.client = client
        self.rule = rule
        self.local = local
        self.prefix = prefix
        self.clock = clock
        self.wall_clock = wall_clock
        self.rule_for: Callable[[str], Rule] = rule_for or (lambda _provider: rule)
        # id(rule) -> (rule, its script arguments, whether it has filters): rules are few and long-lived,
        # and hashing a Rule per call costs more than this identity lookup.
        self._args: dict[int, tuple[Rule, tuple[str | int, ...], bool]] = {}
        # Arguments (str or int) -> their RESP bulk string (see _pack).
        self._bulks: dict[str | int, bytes] = {}
        # Providers whose episode a reply showed open -> its deadline on this process's monotonic clock.
        self.deadlines: dict[str, float] = {}

    def set_rules(self, rule_for: Callable[[str], Rule]) -> None:
        """Judge each provider's next failures by `rule_for(provider)`, here and in the local tracker."""
        self.rule_for = rule_for
        self.local.set_rules(rule_for)

    def keys(self, provider: str) -> list[str]:
        """The provider's keys: recent stamps, buckets, state; one hash tag, so one slot."""
        tag = "{" + self.prefix + provider + "}"
        return [f"{tag}:r", f"{tag}:b", f"{tag}:s"]

    def _rule_info(self, rule: Rule) -> tuple[Rule, tuple[str | int, ...], bool]:
        info = self._args.get(id(rule))
        if info is None or info[0] is not rule:
            if len(self._args) > 1024:  # rules come from a file: a handful, but reloads make new ones
                self._args.clear()
            info = self._args[id(rule)] = (rule, rule_args(rule), has_filters(rule))
        return info

    async def load(self) -> None:
        """Load the script (on every primary of a cluster, which must also say its state is ok)."""
        if isinstance(self.client, RedisCluster):
            # A restarted node answers SCRIPT LOAD before it serves its slots again (CLUSTERDOWN).
            infos: Any = await self.client.cluster_info(target_nodes=RedisCluster.PRIMARIES)
            for info in [infos] if "cluster_state" in infos else infos.values():
                if info.get("cluster_state") != "ok":
                    raise redis_errors.ClusterDownError("a node reports cluster_state other than ok")
        sha = await self.client.script_load(SCRIPT)
        if isinstance(sha, dict):  # RedisCluster answers per node
            sha = next(iter(sha.values()), SCRIPT_SHA)
        if reply_text(sha) != SCRIPT_SHA:
            raise RuntimeError("Redis hashed window.lua differently")

    async def probe(self) -> None:
        """Load the script, then run it for zero failures (the reconnect probe).

        A Redis that refuses a command the script needs (ACL, OOM, a slot not served) fails here, not on the
        next real call: an outage is not declared over too early, and its log lines do not flap.
        """
        await self.load()
        await self.decide({PROBE_PROVIDER: 0})

    async def decide(
        self, counts: Mapping[str, int], now: float | None = None, rules: Mapping[str, Rule] | None = None
    ) -> dict[str, Decision]:
        """Run the script for each provider's `count` counted failures, in one round trip.

        On one Redis, one EVALSHA for every provider; on a Redis Cluster, one per provider (a call's keys
        must share a slot), in one pipeline. `rules` (default `rule_for`) gives each provider's rule. `now`
        (epoch seconds) replaces Redis TIME; only tests pass it. Learns which episodes are open.
        """
        providers = list(counts)
        if not providers:
            return {}
        rule_for = self.rule_for if rules is None else rules.__getitem__
        stamp = "" if now is None else repr(now)
        # On a Redis Cluster, a call's keys must share a slot: one call per provider (each its own hash tag).
        groups = [[provider] for provider in providers] if isinstance(self.client, RedisCluster) else [providers]
        calls: list[tuple[list[str], list[str | int]]] = []
        for group in groups:
            keys: list[str] = []
            args: list[str | int] = ["d", stamp]
            for provider in group:
                keys.extend(self.keys(provider))
                args.append(counts[provider])
                args.extend(self._rule_info(rule_for(provider))[1])
            calls.append((keys, args))
        replies = await self._eval(calls)
        local_now = self.clock()
        decisions = {}
        deadlines = self.deadlines
        for group, per_call in zip(groups, replies, strict=True):
            for provider, reply in zip(group, per_call, strict=True):
                decision = decisions[provider] = Decision.parse(reply)
                if decision.deadline is not None:
                    deadlines[provider] = local_now + (decision.deadline - decision.now)
                elif provider in deadlines:
                    del deadlines[provider]
        return decisions

    async def resolve(self, providers: Sequence[str], now: float | None = None) -> dict[str, Resolved]:
        """Resolve the episodes of `providers` whose deadline is reached, atomically; one round trip."""
        if not providers:
            return {}
        stamp = "" if now is None else repr(now)
        groups = [[p] for p in providers] if isinstance(self.client, RedisCluster) else [list(providers)]
        calls: list[tuple[list[str], list[str | int]]] = [
            ([self.keys(p)[2] for p in group], ["r", stamp, *(repr(self.rule_for(p).resolve_seconds) for p in group)])
            for group in groups
        ]
        replies = await self._eval(calls)
        return {
            provider: Resolved.parse(reply)
            for group, per_call in zip(groups, replies, strict=True)
            for provider, reply in zip(group, per_call, strict=True)
        }

    async def resolve_due(self) -> tuple[list[Resolution], float | None]:
        """Resolve the known episodes whose deadline has passed; returns them and when to look again.

        A deadline another process's hits moved comes back from the script and is kept; an episode found
        resolved (by another process) or gone is forgotten. While any episode is known open, the next look
        is at most EPISODE_POLL away.
        """
        deadlines = self.deadlines
        local_now = self.clock()
        due = [provider for provider, deadline in deadlines.items() if deadline <= local_now]
        resolutions = []
        if due:
            found = await self.resolve(due)
            after = self.clock()
            offset = self.wall_clock() - after
            for provider, resolved in found.items():
                if resolved.episode is not None:
                    resolutions.append(Resolution(provider, _shift(resolved.episode, offset), resolved.now - offset))
                if resolved.deadline is None:
                    deadlines.pop(provider, None)
                else:
                    deadlines[provider] = after + (resolved.deadline - resolved.now)
        if not deadlines:
            return resolutions, None
        return resolutions, min(*deadlines.values(), self.clock() + EPISODE_POLL)

    async def _eval(self, calls: list[tuple[list[str], list[str | int]]]) -> list[Any]:
        """EVALSHA each `(keys, args)` call in one round trip; loads the script once on NOSCRIPT."""
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            commands = [("EVALSHA", SCRIPT_SHA, len(calls[i][0]), *calls[i][0], *calls[i][1]) for i in todo]
            results = await self._pipeline(commands)
            missing = []
            for i, result in zip(todo, results, strict=True):
                if isinstance(result, redis_errors.NoScriptError) and attempt == 0:
                    missing.append(i)  # not run: retry only these once the script is loaded
                elif isinstance(result, Exception):
                    raise result
                else:
                    replies[i] = result
            if not missing:
                break
            await self.load()
            todo = missing
        return replies

    def _pack(self, commands: list[tuple[str | int, ...]]) -> bytes:
        """The commands in RESP, each argument's bulk string taken from a cache.

        What redis-py's pack_commands does, without its per-argument encoder: nearly every argument of a
        call (the command, the SHA, a provider's keys, a rule's parameters, small counts) recurs.
        """
        cache = self._bulks
        out = []
        for command in commands:
            out.append(b"*%d\r\n" % len(command))
            for arg in command:
                bulk = cache.get(arg)
                if bulk is None:
                    data = str(arg).encode()
                    bulk = b"$%d\r\n%s\r\n" % (len(data), data)
                    if len(cache) >= BULK_CACHE:
                        cache.clear()
                    cache[arg] = bulk
                out.append(bulk)
        return b"".join(out)

    async def _pipeline(self, commands: list[tuple[str | int, ...]]) -> list[Any]:
        """Send `commands` in one write, then read every reply (an error reply is returned, not raised).

        On one Redis, straight on a pooled connection: redis-py's Pipeline costs more per call than the
        call itself (its command stack, reset, per-call observability). A Redis Cluster client routes each
        command by its keys, so it takes the cluster pipeline.
        """
        client = self.client
        if isinstance(client, RedisCluster):
            pipe = client.pipeline(transaction=False)
            for command in commands:
                # execute_command: RedisCluster refuses pipe.evalsha(), yet routes EVALSHA by its keys.
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
        pool = client.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(self._pack(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except redis_errors.ResponseError as exc:  # an error reply: read on, the connection stays in step
                    replies.append(exc)
        except BaseException:
            # redis-py has disconnected it (an error or a cancellation mid-call): back to the pool, where the
            # next call reconnects; shielded, so that a cancelled call cannot leak it.
            with anyio.CancelScope(shield=True):
                await pool.release(connection)
            raise
        await pool.release(connection)
        return replies

    def apply(
        self,
        events: Sequence[FailureEvent],
        decisions: Mapping[str, Decision],
        *,
        also_local: bool = False,
        rules: Mapping[str, Rule] | None = None,
    ) -> Recorded:
        """Record `events` in this process's figures and turn the script's decisions into triggers.

        With `also_local`, this process's tracker decides too, and its alerts (tagged fallback) are added
        for the providers Redis did not alert in this batch: after an outage, the failures decided in
        fallback are only in the local windows.
        """
        return self.apply_group([events], decisions, also_local=also_local, rules=rules)[0]

    def apply_group(
        self,
        batches: Sequence[Sequence[FailureEvent]],
        decisions: Mapping[str, Decision],
        *,
        also_local: bool = False,
        rules: Mapping[str, Rule] | None = None,
    ) -> list[Recorded]:
        """`apply` for batches decided together by one call: one `Recorded` per batch, as if each were alone.

        The script saw each provider's counted failures of all the batches as one run, in batch order: an
        alert's index falls in exactly one batch, and goes back to it. Each batch is recorded in this
        process's figures on its own, in order (so its counters, ignored failures, evictions and
        `also_local` decisions are what it would have had alone). A provider's throttled hits of the group
        go to the last batch holding it; an episode resolved before the call weighed it, to the first.
        """
        local = self.local
        rule_for = self.rule_for if rules is None else rules.__getitem__
        offset = self.wall_clock() - self.clock()  # Redis epoch stamps to this process's monotonic seconds
        local_now = self.clock()
        last_batch: dict[str, int] = {}  # per provider: the last batch that holds it
        for position, events in enumerate(batches):
            for event in events:
                last_batch[event.provider] = position
        done: dict[str, int] = {}  # per provider: its counted failures in the batches before this one
        scratch: Counter[tuple[str, str]] = Counter()  # the local tracker tallies ignored failures itself
        results = []
        for position, events in enumerate(batches):
            by_provider: dict[str, list[FailureEvent]] = {}
            for event in events:
                by_provider.setdefault(event.provider, []).append(event)
            rules_of = {provider: rule_for(provider) for provider in by_provider}
            self._filter(by_provider, rules_of, scratch)
            # The provider's recent samples before this batch, only where an alert of this batch shows them.
            before: dict[str, tuple[tuple[float, FailureEvent], ...]] = {}
            for provider, batch in by_provider.items():
                start = done.get(provider, 0)
                if any(start <= alert[0] < start + len(batch) for alert in decisions[provider].alerts):
                    before[provider] = local.samples(provider)
            result = local.record_now(events, decide=also_local, fallback=True)
            local_triggers, result.triggers = result.triggers, []
            result.throttled.clear()  # the shared decision counts throttled hits, not this process's
            for provider, batch in by_provider.items():
                decision = decisions[provider]
                start = done.get(provider, -1)
                if start < 0:  # its first batch of the group: an episode resolved before the call weighed it
                    start = 0
                    result.resolutions.extend(_resolutions(provider, decision, offset))
                done[provider] = start + len(batch)
                if decision.throttled and last_batch[provider] == position:
                    result.throttled[provider] += decision.throttled
                for index, count, first_at, throttled_since, tier, started, rank in decision.alerts:
                    mine = index - start
                    if not 0 <= mine < len(batch):
                        continue
                    seen = [*before[provider], *((local_now, e) for e in batch[: mine + 1])]
                    result.triggers.append(
                        Trigger(
                            provider=provider,
                            event=batch[mine],
                            at=decision.now - offset,
                            count=count,
                            first_at=first_at - offset,
                            throttled_since_last=throttled_since,
                            recent=tuple(seen[-RECENT_SAMPLES:]),
                            rule=rules_of[provider],
                            episode_started_at=started - offset,
                            episode_alerts=rank,
                            tier=tier,
                        )
                    )
            alerted = {trigger.provider for trigger in result.triggers}
            result.triggers.extend(t for t in local_triggers if t.provider not in alerted)
            results.append(result)
        return results

    def _filter(
        self,
        by_provider: dict[str, list[FailureEvent]],
        rules: Mapping[str, Rule],
        ignored: Counter[tuple[str, str]],
    ) -> None:
        """Keep only the failures each provider's rule counts (the same `counted` as MemoryTracker's)."""
        for provider, rule in rules.items():
            if self._rule_info(rule)[2]:
                by_provider[provider] = counted(provider, rule, by_provider[provider], ignored)

    def counts(self, batches: Sequence[Sequence[FailureEvent]]) -> tuple[dict[str, int], dict[str, Rule]]:
        """Each provider's counted failures over `batches` (its rule's filters applied), and its rule."""
        counts: dict[str, int] = {}
        for events in batches:
            for event in events:
                counts[event.provider] = counts.get(event.provider, 0) + 1
        rule_for = self.rule_for
        rules = {provider: rule_for(provider) for provider in counts}
        filtered = {provider for provider, rule in rules.items() if self._rule_info(rule)[2]}
        if filtered:
            for provider in filtered:
                counts[provider] = 0
            for events in batches:
                for event in events:
                    provider = event.provider
                    if provider in filtered and rules[provider].ignores(event.status, event.error_type) is None:
                        counts[provider] += 1
        return counts, rules

    async def record(self, events: Sequence[FailureEvent]) -> Recorded:
        """Weigh every event in its provider's shared window, in order, at Redis's current time."""
        counts, rules = self.counts([events])
        return self.apply(events, await self.decide(counts, rules=rules), rules=rules)

    async def stats_many(self, providers: Sequence[str]) -> list[ProviderStats]:
        """The shared figures of `providers` (those with state in Redis), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for provider in providers:
            recent_key, buckets_key, state_key = self.keys(provider)
            pipe.lrange(recent_key, 0, -1)
            pipe.lrange(buckets_key, 0, -1)
            pipe.hgetall(state_key)
        if isinstance(self.client, RedisCluster):  # its pipeline refuses keyless commands: ask one node apart
            replies = await pipe.execute()
            answer: Any = await self.client.time()
            if isinstance(answer, dict):  # one answer per node asked
                answer = next(iter(answer.values()))
            replies.append(answer)
        else:
            pipe.time()
            replies = await pipe.execute()
        seconds, micros = replies[-1]
        now = int(seconds) + int(micros) / 1_000_000
        offset = self.wall_clock() - self.clock()
        found = []
        for i, provider in enumerate(providers):
            recent, buckets, state = replies[3 * i : 3 * i + 3]
            fields = {reply_text(k): reply_text(v) for k, v in state.items()}
            if not recent and "es" not in fields:
                continue
            found.append(ProviderStats.of(provider, self._window(provider, recent, buckets, fields), now, offset))
        return found

    def _window(self, provider: str, recent: list[Any], buckets: list[Any], fields: dict[str, str]) -> ProviderWindow:
        """The provider's shared state as a ProviderWindow (Redis epoch times), for its figures."""
        rule = self.rule_for(provider)
        last_alert = float(fields["la"]) if "la" in fields else None
        window = ProviderWindow.restore(
            rule,
            [float(t) for t in recent],
            [[float(x) for x in reply_text(b).split("|")] for b in buckets],
            last_alert=last_alert,
            totals=(int(fields.get("ft", 0)), int(fields.get("at", 0)), int(fields.get("tt", 0))),
        )
        if "rl" in fields:  # per-tier cooldowns (an older alertd kept one, `la`, which restore() spread)
            signed = str(self._rule_info(rule)[1][3])  # rule_args: window, cooldown, resolve, signature, …
            window.cooldowns = stored_cooldowns(fields, rule, signed)
        if "es" in fields:
            window.episode_start = float(fields["es"])
            window.episode_alerts = int(fields.get("ea", 0))
            window.episode_throttled = int(fields.get("et", 0))
            window.episode_failures = window.failures_total - int(fields.get("fb", window.failures_total))
            window.last_hit = float(fields.get("lh", fields["es"]))
        if "lr" in fields:
            window.last_resolved = float(fields["lr"])
        return window

    async def stats(self, provider: str) -> ProviderStats | None:
        """One provider's shared figures, or None if Redis holds nothing for it."""
        found = await self.stats_many([provider])
        return found[0] if found else None

    async def all_stats(self) -> list[ProviderStats]:
        """The shared figures of every provider this process tracks, sorted by provider."""
        return await self.stats_many(self.local.providers())

    async def cleanup(self) -> list[str]:
        """Forget this process's idle providers (Redis keys expire by themselves)."""
        return self.local.cleanup_now()

    def tracked(self) -> int:
        """How many providers this process tracks."""
        return self.local.tracked()

    def status(self) -> dict[str, Any]:
        """The mode, without failover (FailoverTracker reports the fallback)."""
        return {"mode": "redis"}
