// Lake's merge driver, evaluated once per QuickJS runtime. Reads fold
// natively (src/native.rs) and call `apply` here for custom modes only; the
// built-in modes below are kept for the differential test that holds the
// native engine to the same answers.
//
// The expression evaluates to a function that takes `tick` (a host function
// the driver calls before each delta, so the host can name the failing delta
// and restart the per-merge deadline) and returns the driver object.
//
// Invariants:
// - Values arrive as JSON text and leave as JSON text; nothing is spliced
//   into source.
// - Keys are written with defineProperty and read only when own, so
//   "__proto__" and "constructor" are ordinary keys, as in JSON.
// - A fold applies deltas one at a time, in the order given (a left fold);
//   patches are never combined with each other.
(function (tick) {
  "use strict";
  const hasOwn = Object.prototype.hasOwnProperty;
  const own = (o, k) => hasOwn.call(o, k);
  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const put = (o, k, v) => {
    Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
  };
  const INDEX = /^(0|[1-9][0-9]*)$/;
  const NOCHANGE = Symbol("nochange");

  // How a mode treats the way to its target.
  const FORCE = 0; // create missing parents; replace a scalar, null or array in the way
  const SOFT = 1; // create missing parents; an existing value in the way stops the write
  const EXISTING = 2; // the whole path must exist

  // RFC 7396 MergePatch(target, patch).
  function mergePatch(target, patch) {
    if (!isObject(patch)) return patch;
    const t = isObject(target) ? target : {};
    for (const k of Object.keys(patch)) {
      const pv = patch[k];
      if (pv === null) {
        if (own(t, k)) delete t[k];
      } else {
        put(t, k, mergePatch(own(t, k) ? t[k] : undefined, pv));
      }
    }
    return t;
  }

  const modes = {
    set: { policy: FORCE, fn: (cur, val) => val },
    insert: { policy: SOFT, fn: (cur, val) => (cur === undefined ? val : cur) },
    replace: { policy: EXISTING, fn: (cur, val) => val },
    merge: { policy: FORCE, fn: (cur, val) => mergePatch(cur, val) },
  };
  const views = {};

  // Applies mode at segs[i..] below node. Returns the new node, undefined to
  // delete it, or NOCHANGE to leave the whole document as it was.
  function step(node, segs, i, mode, val) {
    if (i === segs.length) return mode.fn(node, val);
    const seg = segs[i];
    if (Array.isArray(node)) {
      const idx = seg === "-" ? node.length : INDEX.test(seg) ? Number(seg) : -1;
      if (idx > node.length) return NOCHANGE; // past the end: nothing to address
      if (idx >= 0) {
        const exists = idx < node.length;
        if (!exists && mode.policy === EXISTING) return NOCHANGE;
        const r = step(exists ? node[idx] : undefined, segs, i + 1, mode, val);
        if (r === NOCHANGE) return NOCHANGE;
        if (r === undefined) {
          if (!exists) return NOCHANGE;
          node.splice(idx, 1);
        } else if (exists) {
          node[idx] = r;
        } else {
          node.push(r);
        }
        return node;
      }
      if (mode.policy !== FORCE) return NOCHANGE;
      node = null; // an array that this key cannot index is replaced below
    }
    if (isObject(node)) {
      const exists = own(node, seg);
      if (!exists && mode.policy === EXISTING) return NOCHANGE;
      const r = step(exists ? node[seg] : undefined, segs, i + 1, mode, val);
      if (r === NOCHANGE) return NOCHANGE;
      if (r === undefined) {
        if (!exists) return NOCHANGE;
        delete node[seg];
      } else {
        put(node, seg, r);
      }
      return node;
    }
    // Absent, or a scalar/null (or unindexable array) in the way.
    if (node !== undefined ? mode.policy !== FORCE : mode.policy === EXISTING) return NOCHANGE;
    const r = step(undefined, segs, i + 1, mode, val);
    if (r === NOCHANGE || r === undefined) return NOCHANGE;
    const o = {};
    put(o, seg, r);
    return o;
  }

  function get(node, segs) {
    for (const seg of segs) {
      if (Array.isArray(node)) {
        if (!INDEX.test(seg)) return undefined;
        node = node[Number(seg)];
      } else if (isObject(node)) {
        if (!own(node, seg)) return undefined;
        node = node[seg];
      } else {
        return undefined;
      }
    }
    return node;
  }

  return {
    // Registers a user mode: merge(current, value) -> new value at the path
    // (current is undefined when absent; returning undefined deletes it).
    addMode(name, fn) {
      if (typeof fn !== "function") throw new TypeError("mode '" + name + "' defines no function merge(current, value)");
      modes[name] = { policy: FORCE, fn: (cur, val) => fn(cur, val) };
    },
    hasMode(name) {
      return own(modes, name);
    },
    // Registers a view: view(doc) -> any JSON value, computed from a
    // catalog's whole document.
    addView(name, fn) {
      if (typeof fn !== "function") throw new TypeError("view '" + name + "' defines no function view(doc)");
      views[name] = fn;
    },
    // Runs a view on a document (JSON text); its value as JSON text, null
    // when it returned undefined.
    view(name, doc) {
      if (!own(views, name)) throw new Error("unknown view '" + name + "' (is its file in --views?)");
      tick(0);
      const r = views[name](JSON.parse(doc));
      tick(-1);
      const out = r === undefined ? undefined : JSON.stringify(r);
      return out === undefined ? null : out;
    },
    // One custom-mode step for the native fold: the current value at the
    // path (absent when hasCur is false) and the delta's value as JSON text;
    // returns the new value as JSON text, or null to delete the path.
    apply(name, hasCur, cur, val) {
      if (!own(modes, name)) throw new Error("unknown mode '" + name + "' (is its file in --modes?)");
      tick(0);
      const r = modes[name].fn(hasCur ? JSON.parse(cur) : undefined, JSON.parse(val));
      tick(-1);
      const out = r === undefined ? undefined : JSON.stringify(r);
      return out === undefined ? null : out;
    },
    // input: {"base":[doc]|[],"deltas":[{"p":[..],"m":"set","v":..}],"path":[..]|null,"doc":bool}
    // returns [docText|null, valueAtPathText|null]
    fold(input) {
      const job = JSON.parse(input);
      let doc = job.base.length ? job.base[0] : {};
      for (let i = 0; i < job.deltas.length; i++) {
        tick(i);
        const d = job.deltas[i];
        if (!own(modes, d.m)) throw new Error("unknown mode '" + d.m + "' (is its file in --modes?)");
        const r = step(doc, d.p, 0, modes[d.m], d.v);
        if (r !== NOCHANGE) doc = r === undefined ? {} : r;
      }
      tick(-1);
      let at = null;
      if (job.path !== null) {
        const v = get(doc, job.path);
        at = v === undefined ? null : JSON.stringify(v);
        if (at === undefined) at = null;
      }
      return [job.doc ? JSON.stringify(doc) : null, at];
    },
  };
})
