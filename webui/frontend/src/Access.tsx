// The Access page: targets one may ask for, requests to decide, my own
// requests, active grants with their countdown, and the history. Who the
// caller is comes from the server (WhoIs), never from the page.
import { useCallback, useEffect, useMemo, useState } from "react";
import type { AccessOverview, AccessRequest, AccessTarget } from "./api";
import { accessAction, fetchAccess, requestAccess } from "./api";
import type { Action } from "./access";
import { actions, checkRequest, formatLeft, parseDuration, secondsLeft, sections, who } from "./access";

export function AccessPage() {
  const [o, setO] = useState<AccessOverview | null>(null);
  const [fetchedAt, setFetchedAt] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const [now, setNow] = useState(Date.now());

  const load = useCallback(async () => {
    try {
      const next = await fetchAccess();
      setO(next);
      setFetchedAt(Date.now());
      setError(null);
    } catch (e) {
      setError((e as Error).message);
    }
  }, []);
  useEffect(() => {
    load();
    // The operator moves requests along (granted, expired): follow it.
    const poll = setInterval(load, 3000);
    const tick = setInterval(() => setNow(Date.now()), 1000);
    return () => {
      clearInterval(poll);
      clearInterval(tick);
    };
  }, [load]);

  const act = async (r: AccessRequest, a: Action) => {
    try {
      await accessAction(r.name, a);
      await load();
    } catch (e) {
      setError(`${a} ${r.name}: ${(e as Error).message}`);
    }
  };

  const s = useMemo(() => (o ? sections(o) : null), [o]);
  return (
    <div className="access" data-testid="access-page">
      {error && <div className="problems" data-testid="access-error">{error}</div>}
      {!o ? (
        <p className="muted">{error ? "" : "Loading…"}</p>
      ) : (
        <>
          <p className="muted" data-testid="access-me">Signed in as <b>{who(o)}</b>, from your tailnet identity.</p>
          <Targets targets={o.targets} onRequested={load} onError={setError} />
          {s && (
            <>
              <RequestTable title="Waiting for my decision" testid="pending" rows={s.pending} now={now} fetchedAt={fetchedAt} onAct={act} />
              <RequestTable title="My requests" testid="mine" rows={s.mine} now={now} fetchedAt={fetchedAt} onAct={act} />
              <RequestTable title="Active grants" testid="active" rows={s.active} now={now} fetchedAt={fetchedAt} onAct={act} />
              <RequestTable title="History" testid="history" rows={s.history} now={now} fetchedAt={fetchedAt} onAct={act} history />
            </>
          )}
        </>
      )}
    </div>
  );
}

function Targets({ targets, onRequested, onError }: { targets: AccessTarget[]; onRequested: () => void; onError: (m: string) => void }) {
  return (
    <section>
      <h2>Targets</h2>
      {targets.length === 0 ? (
        <p className="muted">No access targets in this cluster.</p>
      ) : (
        <table className="access-table" data-testid="targets">
          <thead>
            <tr><th>Target</th><th>Group</th><th>At most</th><th>Approvers</th><th>Ask</th></tr>
          </thead>
          <tbody>
            {targets.map((t) => (
              <TargetRow key={t.name} t={t} onRequested={onRequested} onError={onError} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function TargetRow({ t, onRequested, onError }: { t: AccessTarget; onRequested: () => void; onError: (m: string) => void }) {
  const [dur, setDur] = useState("30m");
  const [reason, setReason] = useState("");
  const [busy, setBusy] = useState(false);
  const seconds = parseDuration(dur);
  const problem = checkRequest(t, seconds, reason);
  const submit = async () => {
    if (problem || seconds === null) return;
    setBusy(true);
    try {
      await requestAccess({ target: t.name, seconds, reason });
      setReason("");
      onRequested();
    } catch (e) {
      onError(`request ${t.name}: ${(e as Error).message}`);
    } finally {
      setBusy(false);
    }
  };
  return (
    <tr data-testid={`target-${t.name}`}>
      <td><b>{t.label || t.name}</b>{t.label && <div className="muted">{t.name}</div>}</td>
      <td><code>{t.group}</code></td>
      <td>{t.maxSeconds ? formatLeft(t.maxSeconds) : "-"}</td>
      <td>{(t.approvers ?? []).join(", ") || "-"}{t.allowSelfApproval && <div className="muted">self-approval allowed</div>}</td>
      <td>
        <input aria-label="duration" size={6} value={dur} onChange={(e) => setDur(e.target.value)} />{" "}
        <input aria-label="reason" placeholder={t.reasonRequired ? "reason (required)" : "reason"} value={reason} onChange={(e) => setReason(e.target.value)} />{" "}
        <button className="primary" data-testid="request" disabled={busy || problem !== null} title={problem ?? ""} onClick={submit}>Request</button>
      </td>
    </tr>
  );
}

function RequestTable({ title, testid, rows, now, fetchedAt, onAct, history }: {
  title: string; testid: string; rows: AccessRequest[]; now: number; fetchedAt: number;
  onAct: (r: AccessRequest, a: Action) => void; history?: boolean;
}) {
  return (
    <section>
      <h2>{title} <span className="muted">({rows.length})</span></h2>
      {rows.length > 0 && (
        <table className="access-table" data-testid={testid}>
          <thead>
            <tr><th>Request</th><th>Target</th><th>Requester</th><th>For</th><th>Phase</th><th>{history ? "Ended" : "Time left"}</th><th>Reason</th><th /></tr>
          </thead>
          <tbody>
            {rows.map((r) => (
              <tr key={r.name} data-testid={`request-${r.name}`} data-phase={r.phase}>
                <td>{r.name}</td>
                <td>{r.target}</td>
                <td>{r.requester}</td>
                <td>{formatLeft(r.seconds)}</td>
                <td title={r.message ?? ""}>{r.phase}{r.decision?.by && <div className="muted">by {r.decision.by}</div>}</td>
                <td data-testid="left">{history ? (r.endedAt ? new Date(r.endedAt).toLocaleString() : "-") : r.phase === "Active" ? formatLeft(secondsLeft(r, fetchedAt, now)) : "-"}</td>
                <td>{r.reason ?? ""}</td>
                <td>
                  {actions(r).map((a) => (
                    <button key={a} data-testid={a} className={a === "approve" ? "primary" : ""} onClick={() => onAct(r, a)}>{a[0].toUpperCase() + a.slice(1)}</button>
                  ))}
                  {history && (r.history?.length ?? 0) > 0 && (
                    <details><summary>history</summary>
                      <ul>{r.history!.map((h, i) => <li key={i}>{h.at ? new Date(h.at).toLocaleTimeString() : ""} {h.type}{h.by ? ` by ${h.by}` : ""}{h.message ? `: ${h.message}` : ""}</li>)}</ul>
                    </details>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
