"""Many containers at once: parallel create (pipelined with a single lease watcher),
destroy, stop and start, with progress events and a summary.

Only address allocation and network updates are serialised (one lock); snapshots, fix-ups,
defines and starts of different containers run in parallel, and the wait for addresses is
one poll of the lease table for all of them, not one per container."""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from lxcforge import domain, faults, host, interrupts, journal, names, network, store, timeline
from lxcforge.config import Settings
from lxcforge.errors import AlreadyExists, LxcforgeError
from lxcforge.ops import addresses, capacity, repair, tuning
from lxcforge.ops import container as container_ops
from lxcforge.store import Store
from lxcforge.virt import DomainInfo, ThreadConnections, Virt

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
# While containers wait for their leases, new looks at the lease table this often (where it
# is a local file): the last lease is seen on average half of it after dnsmasq granted it,
# the wait a user reads. One look, for the whole batch, is a stat of libvirt's status file
# and, where it changed, a search of it for the waiting MACs (Virt._status_leases).
LEASE_POLL_SECONDS = 0.05
INTERRUPTED = "interrupted: not made, or undone"
NOT_BEGUN = "interrupted: not begun"
CUT_SHORT = (INTERRUPTED, NOT_BEGUN)  # what Ctrl-C left undone, not a failure of its own
# Addresses reserved at a time, at least (see _run_creations); bounded because choosing
# each address looks at every reservation of its network. The tests set LXCFORGE_RESERVE_CHUNK
# small to reach a batch's later chunks with a few containers.
RESERVE_CHUNK = 64
RESERVE_CHUNK_ENV = "LXCFORGE_RESERVE_CHUNK"


def reserve_chunk() -> int:
    return int(os.environ.get(RESERVE_CHUNK_ENV) or RESERVE_CHUNK)


def default_jobs() -> int:
    # Starting a container is mostly libvirtd's and the kernel's work; a few workers per core
    # keep that pipeline full without oversubscribing a small host.
    return max(4, min(32, 4 * (os.cpu_count() or 1)))


def destroy_jobs() -> int:
    # libvirt's destroy of an LXC domain signals its controller and sleeps 200 ms inside
    # libvirtd before it checks again: the work is waiting, not CPU. Up to 16 at once leaves
    # some of libvirtd's 20 worker threads (max_workers) for other clients.
    return 16


Event = Callable[[str, str], None]  # (kind, name): created | addressed | failed | done


def journaled(pool: Store, action: str, on_event: Event) -> Event:
    """on_event, and each event also in the store's event journal (lxcforge events)."""
    # A new that does not wait for addresses reports "done" right after "created": nothing
    # more to record.
    done = {"destroy": "removed", "new": None}.get(action, f"{action} done")
    names_of = {"created": "created", "addressed": "leased", "failed": f"{action} failed", "done": done}

    def both(kind: str, name: str) -> None:
        event = names_of.get(kind, kind)
        if event is not None:
            journal.emit(pool.root, event, name)
        on_event(kind, name)
    return both


@dataclass
class Outcome:
    name: str
    ok: bool
    error: str | None = None
    seconds: float = 0.0
    container: container_ops.Container | None = None
    phases: dict[str, float] = field(default_factory=dict)
    hint: str | None = None
    repaired: int = 0
    # (step, start, end) on the wall clock, epoch seconds: what --report records.
    steps: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass
class Summary:
    action: str
    outcomes: list[Outcome]
    seconds: float  # the parallel part
    interrupted: bool = False  # by Ctrl-C: the outcomes say what was kept
    # The whole command, from its process's start (set by the command line once it is done).
    command_started: float | None = None
    command_seconds: float | None = None

    @property
    def succeeded(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def repaired(self) -> int:
        """Containers that needed a forced restart before libvirt fully managed them."""
        return sum(1 for o in self.outcomes if o.repaired)

    def percentile(self, q: float) -> float | None:
        return _percentile([o.seconds for o in self.succeeded], q)

    def phase_percentile(self, phase: str, q: float) -> float | None:
        return _percentile([o.phases[phase] for o in self.succeeded if phase in o.phases], q)

    def as_dict(self) -> dict[str, object]:
        phases = sorted({p for o in self.succeeded for p in o.phases})
        return {
            "action": self.action,
            "total": len(self.outcomes),
            "succeeded": len(self.succeeded),
            "failed": [{"name": o.name, "error": o.error, "hint": o.hint} for o in self.failed],
            "repaired": self.repaired,
            "seconds": round(self.command_seconds if self.command_seconds is not None else self.seconds, 3),
            "parallel_seconds": round(self.seconds, 3),
            **self._edges(),
            "interrupted": self.interrupted,
            "p50_seconds": _round(self.percentile(50)),
            "p95_seconds": _round(self.percentile(95)),
            "phase_p50_ms": {p: _round((self.phase_percentile(p, 50) or 0) * 1000) for p in phases},
            "created" if self.action == "new" else "done":
                [o.container for o in self.succeeded if o.container is not None] if self.action == "new"
                else [o.name for o in self.succeeded],
        }


    def _edges(self) -> dict[str, float | None]:
        """Time from the command's start to the first container's first step, and from the
        last one's end to now: the part of the wait no per-container figure shows."""
        steps = [step for o in self.outcomes for step in o.steps]
        if self.command_started is None or self.command_seconds is None or not steps:
            return {"before_first_seconds": None, "after_last_seconds": None}
        first, last = min(s[1] for s in steps), max(s[2] for s in steps)
        return {"before_first_seconds": round(first - self.command_started, 3),
                "after_last_seconds": round(self.command_started + self.command_seconds - last, 3)}


_percentile = timeline.percentile  # the figures --report files are recomputed with


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def expand_names(count: int | None, prefix: str | None, given: Sequence[str]) -> list[str]:
    """NAME... and/or --count N --prefix P (P1..PN), in order, each validated, no repeats."""
    result = list(given)
    if count is not None:
        if not prefix:
            raise LxcforgeError("--count needs --prefix", hint="e.g. lxcforge new --count 100 --prefix web")
        if count < 1:
            raise LxcforgeError("--count must be at least 1", hint="e.g. --count 100")
        result += [f"{prefix}{i}" for i in range(1, count + 1)]
    if not result:
        raise LxcforgeError("no container names given", hint="lxcforge new NAME... or --count N --prefix P")
    seen: set[str] = set()
    for name in result:
        names.validate_container_name(name)
        if name in seen:
            raise LxcforgeError(f"{name} is named twice", hint="give each container once")
        seen.add(name)
    return result


def new_many(
    settings: Settings,
    wanted: Sequence[str],
    options: container_ops.NewOptions,
    *,
    networks: Sequence[str] = (),
    jobs: int | None = None,
    check_capacity: bool = True,
    on_event: Event = lambda _kind, _name: None,
) -> Summary:
    """Create wanted in parallel: the one way containers are made (a batch of one is a
    batch). Every check that can be made before the first container is made first; then
    each container either ends up running with its address or leaves nothing behind."""
    started = time.monotonic()
    options.check()
    nets = list(networks) or [options.network or settings.network]
    pool = Store.from_settings(settings).ensure()
    base = container_ops.resolve_base(settings, pool, options.base)
    with Virt(settings.uri) as virt, ThreadConnections(settings.uri) as connections, \
            contextlib.ExitStack() as locks:
        # A missing or inactive network is refused first.
        plans = {net: addresses.network_plan(virt, net) for net in nets}
        # Every name of the batch is locked from here to the end: whatever else exists under
        # these names and has no domain is a leftover of a killed lxcforge, safe to reclaim.
        for name in wanted:
            locks.enter_context(container_ops.name_lock(pool, name))
        faults.point("new.locked")
        finished_off = [name for name in wanted if pool.is_pending(name)]
        for name in finished_off:
            # A new or destroy of this name was killed half way: finish it off first.
            log.warning("%s: removing what an interrupted lxcforge left half made", name)
            container_ops.destroy(settings, name, missing_ok=True, virt=virt, pool=pool, locked=True)
        existing = set(virt.domain_names())
        clash = [n for n in wanted if n in existing]
        if clash:
            shown = ", ".join(clash[:5]) + (" ..." if len(clash) > 5 else "")
            raise AlreadyExists(f"{len(clash)} of these containers already exist: {shown}" if len(wanted) > 1
                                else f"container {clash[0]} already exists",
                                hint="choose other names, or destroy them first")
        # Read again where it matters: anything reclaimed or finished off changed the networks,
        # and a clash or --ip must be judged on what holds now that the names are locked.
        stale = _reclaim(virt, pool, settings, wanted, existing) or finished_off or options.ip or any(
            addresses.reservation_holder(plan, n) for n in wanted for plan in plans.values())
        if stale:
            plans = {net: addresses.network_plan(virt, net) for net in nets}
        foreign = [(n, net) for n in wanted for net, plan in plans.items() if addresses.reservation_holder(plan, n)]
        if foreign:
            name, net = foreign[0]
            raise AlreadyExists(f"network {net} already has a DHCP reservation named {name}, not made by this store",
                                hint=f"choose another name, or remove it: virsh -c {settings.uri} net-update {net} "
                                "delete ip-dhcp-host ...")
        if options.ip:
            # One container: refuse an address outside the range or taken before any work.
            plan = plans[nets[0]]
            addresses.choose_address(plan, wanted[0], options.ip, addresses.leased_elsewhere(virt, plan),
                                     str(settings.store))
        if check_capacity:
            capacity.require(capacity.check_new(virt, pool, plans, len(wanted), options))
            advice = tuning.slow_boot_advice()
            if advice:
                log.warning("%s", advice)
            for net, plan in plans.items():
                if plan.hostsdir is None and len(wanted) > 1:
                    log.warning("network %s makes each reservation a libvirt live update (~0.3 s, one at a "
                                "time); 'lxcforge network adopt %s' makes it fast", net, net)
        creator = container_ops.Creator(settings, pool, virt, base, options, connect=connections.get)
        on_event = journaled(pool, "new", on_event)
        assignment = {name: nets[i % len(nets)] for i, name in enumerate(wanted)}
        for name in wanted:
            pool.mark_pending(name, "new")
        try:
            with host.Ipv6Switch() as ipv6_switch:
                creator.ipv6_off = ipv6_switch.turn_off
                outcomes, interrupted = _run_creations(creator, virt, pool, wanted, assignment, options,
                                                       jobs or default_jobs(), on_event)
            # Each one that got its address was also confirmed managed: list need not ask.
            repair.remember_managed(creator.confirmed)
        finally:
            # Complete containers were cleared as they finished (so a kill keeps them); the
            # rest are undone, unless an undo step failed (libvirtd gone, say): those keep
            # their mark, for the next new, destroy or gc to finish.
            for name in wanted:
                if pool.is_pending(name) and not _half_made(virt, pool, name):
                    pool.clear_pending(name)
    return Summary("new", outcomes, time.monotonic() - started, interrupted)


def _half_made(virt: Virt, pool: Store, name: str) -> bool:
    try:
        return pool.container_path(name).exists() or virt.domain_exists(name)
    except LxcforgeError:
        return True  # cannot tell (libvirtd unreachable): keep the mark


def _reclaim(virt: Virt, pool: Store, settings: Settings, wanted: Sequence[str], existing: set[str]) -> bool:
    """Remove what a killed lxcforge left under these names (they are locked and have no
    domain): this store's reservations, hosts files and leases, and the subvolume. Whether
    there was any."""
    wanted_set = set(wanted)
    orphans = addresses.orphaned_reservations(virt, str(settings.store), existing)
    drop = [pair for name, pairs in orphans.items() if name in wanted_set for pair in pairs]
    leftovers = [pool.container_path(n) for n in wanted if pool.container_path(n).exists()]
    for net, entries in addresses.by_network(drop).items():
        addresses.drop_addresses(virt, net, entries)
    for path in leftovers:
        store.delete_tree(path)
    if drop or leftovers:
        log.warning("reclaimed what an interrupted lxcforge left: %s",
                    ", ".join([f"reservation {e.name} on {n}" for n, e in drop] + [str(p) for p in leftovers]))
    faults.point("new.reclaimed")
    return bool(drop or leftovers)


def _run_creations(
    creator: container_ops.Creator,
    virt: Virt,
    pool: Store,
    wanted: Sequence[str],
    assignment: dict[str, str],
    options: container_ops.NewOptions,
    jobs: int,
    on_event: Event,
) -> tuple[list[Outcome], bool]:
    """Reserve addresses a chunk at a time, ahead of the workers (one network read and one
    definition per chunk, not per container; and the first containers of a large batch
    start at once instead of after the whole batch's reservations), create in parallel,
    and watch the lease table for all of them. Returns the outcomes and whether Ctrl-C cut
    it short."""
    outcomes: dict[str, Outcome] = {}
    waiting: dict[str, container_ops.Creation] = {}
    unreserved = list(wanted)
    reservations: dict[str, addresses.Reservation] = {}
    ahead = 2 * jobs  # submitted and not finished: enough that no worker waits for an address
    # A chunk is topped up to at least RESERVE_CHUNK: each chunk costs a read and a
    # definition of every network it uses, and with a thousand reservations on a network
    # that is ~25 and ~70 ms of libvirtd's time under load, on the path of every container.
    chunk_size = max(ahead, reserve_chunk())
    wait_for_address = options.start and options.wait
    with interrupts.deferred() as interrupt, \
            ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lxcforge-new") as executor:
        futures: dict[Future[container_ops.Creation], str] = {}
        try:
            while unreserved or futures or waiting:
                # The one place Ctrl-C is taken: every reservation made so far belongs to a
                # submitted creation, a creation waiting for its lease, or an outcome.
                interrupt.check()
                if unreserved and len(futures) < ahead:
                    chunk, unreserved = unreserved[:chunk_size], unreserved[chunk_size:]
                    try:
                        reserved = addresses.reserve_addresses(virt, pool, [(n, assignment[n]) for n in chunk],
                                                               options.ip)
                    except LxcforgeError as exc:
                        for name in chunk + unreserved:
                            outcomes[name] = Outcome(name, False, f"no address reserved: {exc.message}",
                                                     hint=exc.hint)
                            on_event("failed", name)
                        unreserved = []
                        continue
                    reservations.update(reserved)
                    for name in chunk:
                        journal.emit(pool.root, "reserved", name, ip=reserved[name][0].ip,
                                     network=assignment[name])
                        futures[executor.submit(creator.create, name, assignment[name], reserved[name])] = name
                poll = LEASE_POLL_SECONDS if waiting and virt.is_local else POLL_SECONDS
                if futures:
                    done, _ = wait(list(futures), timeout=poll, return_when=FIRST_COMPLETED)
                else:
                    done = set()
                    time.sleep(poll)
                for future in done:
                    name = futures.pop(future)
                    try:
                        creation = future.result()
                    except Exception as exc:
                        outcomes[name] = Outcome(name, False, _reason(exc), hint=_hint(exc))
                        on_event("failed", name)
                        continue
                    on_event("created", name)
                    if wait_for_address:
                        waiting[name] = creation
                    else:
                        creation.undo.commit()
                        pool.clear_pending(name)
                        outcomes[name] = _success(creation, None)
                        on_event("done", name)
                if waiting:
                    _collect_leases(virt, pool, waiting, outcomes, options, on_event, creator.confirmed)
        except BaseException as exc:
            # Interrupted (or a bug): nothing of this batch that is not finished may stay
            # behind. Queued creations never start (only their reservations exist); running
            # ones are let finish and then undone, like those still waiting for their address.
            # Containers already complete are kept, as after a partial failure.
            cancelled = [name for future, name in futures.items() if future.cancel()]
            if isinstance(exc, KeyboardInterrupt):
                log.warning("interrupted: undoing the %d containers not yet complete (a second Ctrl-C "
                            "is ignored until then)", len(futures) - len(cancelled) + len(waiting))
            executor.shutdown(wait=True)
            for future in futures:
                if not future.cancelled() and future.exception() is None:
                    future.result().undo.rollback()
            for creation in waiting.values():
                creation.undo.rollback()
            addresses.drop_reservations(virt, [(assignment[name], reservations[name][0]) for name in cancelled])
            if not isinstance(exc, KeyboardInterrupt):
                raise
            for name in wanted:
                if name not in outcomes:
                    outcomes[name] = Outcome(name, False, INTERRUPTED)
            return [outcomes[name] for name in wanted], True
    return [outcomes[name] for name in wanted], False


def _collect_leases(virt: Virt, pool: Store, waiting: dict[str, container_ops.Creation],
                    outcomes: dict[str, Outcome], options: container_ops.NewOptions, on_event: Event,
                    confirmed: dict[str, str]) -> None:
    leased: set[tuple[str, str]] = set()
    for net in {c.net for c in waiting.values()}:
        macs = [c.entry.mac for c in waiting.values() if c.net == net and c.entry is not None]
        try:
            leased |= {(lease.mac, lease.ip) for lease in virt.leases(net, macs=macs)}
        except LxcforgeError as exc:
            log.warning("cannot read leases of %s: %s", net, exc)
    now = time.monotonic()
    for name, creation in list(waiting.items()):
        assert creation.entry is not None
        if (creation.entry.mac, creation.entry.ip) in leased:
            del waiting[name]
            creation.timed("lease", creation.started_at + sum(creation.phases.values()))
            try:
                # It has booted far enough to ask for its address: libvirt has had its init
                # event long since, or lost it for good (repair.py).
                t = time.monotonic()
                creation.repaired += repair.ensure_managed(virt, name, settle=repair.LEASED_SETTLE_SECONDS)
                creation.timed("managed", t)
                repair.note_confirmed(confirmed, name)  # for list, under this very controller
            except LxcforgeError as exc:
                creation.undo.rollback()
                outcomes[name] = Outcome(name, False, exc.message, now - creation.started_at,
                                         phases=creation.phases, hint=exc.hint, steps=creation.steps)
                on_event("failed", name)
                continue
            creation.undo.commit()
            pool.clear_pending(name)
            if creation.repaired:
                journal.emit(pool.root, "repaired", name, restarts=creation.repaired)
            faults.point("new.leased")
            outcomes[name] = _success(creation, True)
            on_event("addressed", name)
        elif now - creation.started_at > options.timeout:
            del waiting[name]
            reason = f"no lease for {creation.entry.ip} within {options.timeout:.0f} s"
            hint = ("check the base boots ('lxcforge new --keep-failed', then 'lxcforge console NAME'), "
                    "or raise --timeout")
            if options.keep_failed:
                creation.undo.commit()
                pool.clear_pending(name)
                reason += " (kept: --keep-failed)"
            else:
                creation.undo.rollback()
                reason += "; removed it"
            outcomes[name] = Outcome(name, False, reason, now - creation.started_at, phases=creation.phases,
                                     hint=hint, steps=creation.steps)
            on_event("failed", name)


def _success(creation: container_ops.Creation, leased: bool | None) -> Outcome:
    state = "running" if creation.spec is not None and creation.phases.get("start") is not None else "shut off"
    return Outcome(creation.name, True, None, time.monotonic() - creation.started_at,
                   creation.result(state, leased), dict(creation.phases), repaired=creation.repaired,
                   steps=list(creation.steps))


def _hint(exc: BaseException) -> str | None:
    return exc.hint if isinstance(exc, LxcforgeError) else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, LxcforgeError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


# -- many existing containers -------------------------------------------------------------------
@dataclass
class Targets:
    """What a command's names, globs or --all came to, and what was read to get there
    (kept for destroy_many, which would otherwise list the same again)."""
    names: list[str]
    # Domains of those names as listed, whoever made them (their XML says whose).
    listed: dict[str, DomainInfo] = field(default_factory=dict)
    # This store's reservations without a domain, by name (addresses.orphaned_reservations);
    # None where not read.
    orphans: dict[str, list[tuple[str, network.DhcpHost]]] | None = None


def resolve(settings: Settings, patterns: Sequence[str], *, all_: bool) -> list[str]:
    """Names, globs ('web*') and --all, against lxcforge's containers of this store. A literal
    name that matches nothing is kept, so the operation can say it does not exist."""
    return resolve_targets(settings, patterns, all_=all_).names


def resolve_targets(settings: Settings, patterns: Sequence[str], *, all_: bool,
                    orphans: bool = False) -> Targets:
    """resolve, with the domains it read and (with orphans, and always for globs and --all)
    the store's reservations without a domain: one listing of the host's domains, one read
    of each network."""
    globs = [p for p in patterns if any(ch in p for ch in "*?[")]
    literal = {p for p in patterns if p not in globs}
    with Virt(settings.uri) as virt:
        defined = virt.domain_names()
        matched = defined if all_ else [n for n in defined if any(fnmatch.fnmatchcase(n, g) for g in globs)]
        # Only the domains matched or named are read (their XML says whose they are).
        wanted = sorted(set(matched) | (literal & set(defined)))
        listed = {dom.name: dom for dom in virt.domains(wanted, from_files=True)} if wanted else {}
        mine = [name for name in matched if name in listed
                and (meta := domain.read_metadata(listed[name].xml)) is not None and meta.store == str(settings.store)]
        # Half-made containers count too: a subvolume or a reservation without a domain.
        found = (addresses.orphaned_reservations(virt, str(settings.store), set(defined))
                 if all_ or globs or orphans else None)
    half_made = set(found or ())
    on_disk = sorted(p.name for p in (settings.store / "containers").glob("*")) if all_ or patterns else []
    known = sorted(set(mine) | set(on_disk) | half_made)
    if all_:
        return Targets(known, listed, found)
    result: list[str] = []
    for pattern in patterns:
        if pattern in globs:
            result += [n for n in known if fnmatch.fnmatchcase(n, pattern) and n not in result]
        elif pattern not in result:
            result.append(names.validate_container_name(pattern))
    return Targets(result, listed, found)


def each(action: str, targets: Sequence[str], fn: Callable[[str], object], *, jobs: int | None = None,
         on_event: Event = lambda _kind, _name: None) -> Summary:
    """Run fn(name) for every target in parallel; failures are collected, not raised. Ctrl-C
    begins no more (those are NOT_BEGUN) and lets the ones under way finish: a start or a
    destroy cut half way leaves work for gc, and the batch's libvirt connections must outlive
    its workers. The summary then says it was interrupted."""
    started = time.monotonic()
    outcomes: dict[str, Outcome] = {}

    def one(name: str) -> Outcome:
        t, wall = time.monotonic(), time.time()
        try:
            result = fn(name)
        except Exception as exc:
            on_event("failed", name)
            return Outcome(name, False, _reason(exc), time.monotonic() - t, hint=_hint(exc),
                           steps=[(action, wall, time.time())])
        on_event("done", name)
        made = result if isinstance(result, container_ops.Container) else None
        return Outcome(name, True, None, time.monotonic() - t, container=made,
                       repaired=made.repaired if made else 0, steps=[(action, wall, time.time())])

    interrupted = False
    with interrupts.deferred() as interrupt, \
            ThreadPoolExecutor(max_workers=jobs or default_jobs(), thread_name_prefix=f"lxcforge-{action}") as ex:
        futures = {ex.submit(one, name): name for name in targets}
        pending: set[Future[Outcome]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:  # a cancelled one has left pending before it could be done
                outcome = future.result()
                outcomes[outcome.name] = outcome
            if interrupt.requested and not interrupted:
                interrupted = True
                for future in pending:
                    if future.cancel():
                        outcomes[futures[future]] = Outcome(futures[future], False, NOT_BEGUN)
                pending = {future for future in pending if not future.cancelled()}
    return Summary(action, [outcomes[n] for n in targets], time.monotonic() - started, interrupted=interrupted)


@contextlib.contextmanager
def _start_batch(settings: Settings) -> Iterator[Callable[[], dict[str, Any]]]:
    """What every start of a batch shares, as new does it: the store attached once, four
    workers to a libvirt connection (ThreadConnections), and the batch's veths handed to one
    low-priority shell for their IPv6 switch (host.Ipv6Switch), whose writes would otherwise
    spin on the workers' CPU while libvirtd starts the others. Yields, for the calling
    worker, container_ops.start's (and restart's) options that say so."""
    Store.from_settings(settings).ensure()  # re-attach the pool after a reboot
    with ThreadConnections(settings.uri) as connections, host.Ipv6Switch() as ipv6_switch:
        yield lambda: {"virt": connections.get(), "ipv6_off": ipv6_switch.turn_off, "store_ready": True}


def start_many(settings: Settings, targets: Sequence[str], *, wait: bool = True, timeout: float = 60.0,
               jobs: int | None = None, action: str = "start",
               on_event: Event = lambda _kind, _name: None) -> Summary:
    """Start in parallel (_start_batch)."""
    with _start_batch(settings) as shared:
        return each(action, targets,
                    lambda name: container_ops.start(settings, name, wait=wait, timeout=timeout, **shared()),
                    jobs=jobs, on_event=on_event)


def stop_many(settings: Settings, targets: Sequence[str], *, timeout: float = 30.0, jobs: int | None = None,
              on_event: Event = lambda _kind, _name: None) -> Summary:
    """Stop in parallel, four workers to a libvirt connection (a connection per container
    costs ~8 round trips through a libvirtd that is busy with the others)."""
    with ThreadConnections(settings.uri) as connections:
        return each("stop", targets,
                    lambda name: container_ops.stop(settings, name, timeout=timeout, virt=connections.get()),
                    jobs=jobs, on_event=on_event)


def restart_many(settings: Settings, targets: Sequence[str], *, timeout: float = 30.0, jobs: int | None = None,
                 on_event: Event = lambda _kind, _name: None) -> Summary:
    """Stop and start in parallel, each stop on the start's connection (_start_batch)."""
    with _start_batch(settings) as shared:
        return each("restart", targets,
                    lambda name: container_ops.restart(settings, name, timeout=timeout, **shared()),
                    jobs=jobs, on_event=on_event)


def destroy_many(settings: Settings, targets: Targets, *, missing_ok: bool = False,
                 jobs: int | None = None, on_event: Event = lambda _kind, _name: None) -> Summary:
    """Destroy in parallel, four workers to a libvirt connection; the reservations of all of them
    are dropped together at the end, one network read per network. What resolving the names
    read (resolve_targets) is not read again."""
    pool = Store.from_settings(settings).ensure()
    on_event = journaled(pool, "destroy", on_event)
    deferred: list[tuple[str, network.DhcpHost]] = []
    with Virt(settings.uri) as virt, ThreadConnections(settings.uri) as connections:
        orphans = targets.orphans
        if orphans is None:
            orphans = addresses.orphaned_reservations(virt, str(settings.store), set(virt.domain_names()))
        summary = each("destroy", targets.names,
                       lambda name: container_ops.destroy(settings, name, missing_ok=missing_ok,
                                                          virt=connections.get(), pool=pool, deferred=deferred,
                                                          listed=targets.listed, orphans=orphans),
                       jobs=jobs or destroy_jobs(), on_event=on_event)
        _drop_deferred(virt, deferred, summary)
    return summary


def _drop_deferred(virt: Virt, deferred: Sequence[tuple[str, network.DhcpHost]], summary: Summary) -> None:
    """The batch's reservations and leases, each network's at once and the networks side by
    side (each is a read and a definition of a network holding every other container's
    reservation: ~0.1 s apiece with 1000 running)."""
    grouped = addresses.by_network(deferred)

    def drop(net: str) -> str | None:
        try:
            addresses.drop_addresses(virt, net, grouped[net])
        except LxcforgeError as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001 - reported per container, like the others
            return f"{type(exc).__name__}: {exc}"
        return None

    with ThreadPoolExecutor(max_workers=max(1, len(grouped))) as pool:
        failures = dict(zip(grouped, pool.map(drop, grouped), strict=True))
    for net, exc in failures.items():
        if exc is None:
            continue
        for entry in grouped[net]:
            for outcome in summary.outcomes:
                if outcome.name == entry.name:
                    outcome.ok, outcome.error = False, f"reservation not dropped: {exc}"
