// p2m review page: page through images, drag COCO-17 keypoints, set visibility, accept/reject people, save.
// Plain JS, no dependencies. Every request carries the token from the page's <meta name="p2m-token">.
"use strict";
(() => {
  const TOKEN = document.querySelector('meta[name="p2m-token"]').content;
  const SVGNS = "http://www.w3.org/2000/svg";
  const DOT_PX = 6; // keypoint radius on screen, px
  const $ = (id) => document.getElementById(id);
  const svg = $("view");
  const withToken = (path) => path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

  let NAMES = [];
  let SKELETON = [];
  const S = {
    index: 0, count: 0, page: null, people: [], sel: null, selK: -1, drag: null, pan: null, busy: false,
    fit: null, view: null,
  };

  async function api(path, options) {
    let res;
    try {
      res = await fetch(withToken(path), options);
    } catch (err) {
      return { ok: false, status: 0, body: { error: `the review server did not answer (${err.message})` } };
    }
    let body;
    try {
      body = await res.json();
    } catch (err) {
      body = { error: `HTTP ${res.status}` };
    }
    return { ok: res.ok, status: res.status, body };
  }

  const sideOf = (name) => (name.startsWith("L_") ? "left" : name.startsWith("R_") ? "right" : "mid");
  const isRejected = (a) => !!(a.review && a.review.status === "rejected");
  const el = (tag, attrs, parent) => {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  };

  // ------------------------------------------------------------------------------------------ people
  function makePerson(entry) {
    const a = entry.annotation;
    const flat = Array.isArray(a.keypoints) && a.keypoints.length === 51 ? a.keypoints : new Array(51).fill(0);
    const kp = [];
    for (let k = 0; k < 17; k++) kp.push({ x: +flat[3 * k], y: +flat[3 * k + 1], v: +flat[3 * k + 2], last: null });
    return { ann: a, etag: entry.etag, kp, rejected: isRejected(a), accept: false, conflict: false, els: null };
  }

  function kpChanged(p) {
    const flat = p.ann.keypoints || [];
    return p.kp.some((q, k) => q.v !== +flat[3 * k + 2] ||
      (q.v > 0 && (Math.abs(q.x - flat[3 * k]) > 1e-3 || Math.abs(q.y - flat[3 * k + 1]) > 1e-3)));
  }
  const isDirty = (p) => kpChanged(p) || p.rejected !== isRejected(p.ann) || p.accept;

  function centreOf(p) {
    const pts = p.kp.filter((q) => q.v > 0);
    if (pts.length) return { x: pts.reduce((s, q) => s + q.x, 0) / pts.length, y: pts.reduce((s, q) => s + q.y, 0) / pts.length };
    const b = p.ann.bbox;
    if (Array.isArray(b) && b.length === 4) return { x: b[0] + b[2] / 2, y: b[1] + b[3] / 2 };
    return { x: S.page.image.width / 2, y: S.page.image.height / 2 };
  }

  function setVisibility(p, k, v) {
    const q = p.kp[k];
    if (q.v === v) return;
    if (v === 0) {
      q.last = { x: q.x, y: q.y };
    } else if (q.v === 0) {
      const at = q.last || centreOf(p);
      q.x = at.x;
      q.y = at.y;
    }
    q.v = v;
    changed(p);
  }

  // ------------------------------------------------------------------------------------------ drawing
  function scale() {
    const m = svg.getScreenCTM();
    return m && m.a > 0 ? m.a : 1;
  }

  function build() {
    const group = $("people");
    group.replaceChildren();
    for (const p of S.people) {
      const g = el("g", { class: "person", "data-ann": p.ann.id }, group);
      const els = { g, bbox: el("rect", { class: "bbox" }, g), bones: [], dots: [] };
      for (const [a, b] of SKELETON) {
        const sa = sideOf(NAMES[a]);
        els.bones.push(el("line", { class: "bone " + (sa === sideOf(NAMES[b]) ? sa : "mid") }, g));
      }
      els.label = el("text", { class: "label" }, g);
      els.label.textContent = `#${p.ann.id}`;
      p.kp.forEach((_, k) => {
        const c = el("circle", { class: "kp " + sideOf(NAMES[k]), id: `kp-${p.ann.id}-${k}` }, g);
        const t = el("title", {}, c);
        t.textContent = `${NAMES[k]} · person #${p.ann.id}`;
        c.addEventListener("pointerdown", (e) => startDrag(e, p, k));
        els.dots.push(c);
      });
      p.els = els;
    }
    redraw();
  }

  function drawPerson(p, s) {
    const { g, bbox, bones, dots, label } = p.els;
    g.classList.toggle("rejected", p.rejected);
    g.classList.toggle("selected", p === S.sel);
    const b = p.ann.bbox;
    if (Array.isArray(b) && b.length === 4) {
      bbox.setAttribute("x", b[0]); bbox.setAttribute("y", b[1]);
      bbox.setAttribute("width", Math.max(0, b[2])); bbox.setAttribute("height", Math.max(0, b[3]));
      label.setAttribute("x", b[0]); label.setAttribute("y", b[1] - 6 / s);
    } else {
      bbox.classList.add("hidden");
      const c = centreOf(p);
      label.setAttribute("x", c.x); label.setAttribute("y", c.y);
    }
    label.setAttribute("font-size", 13 / s);
    label.setAttribute("stroke-width", 3 / s);
    SKELETON.forEach(([a, c], i) => {
      const qa = p.kp[a], qc = p.kp[c], line = bones[i];
      line.classList.toggle("hidden", !(qa.v > 0 && qc.v > 0));
      line.classList.toggle("occluded", qa.v === 1 || qc.v === 1);
      line.setAttribute("x1", qa.x); line.setAttribute("y1", qa.y);
      line.setAttribute("x2", qc.x); line.setAttribute("y2", qc.y);
    });
    p.kp.forEach((q, k) => {
      const c = dots[k];
      c.setAttribute("cx", q.x); c.setAttribute("cy", q.y);
      c.setAttribute("r", (p === S.sel && k === S.selK ? 1.5 : 1) * DOT_PX / s);
      c.classList.toggle("hidden", q.v === 0);
      c.classList.toggle("v1", q.v === 1);
      c.classList.toggle("sel", p === S.sel && k === S.selK);
    });
  }

  function redraw() {
    const s = scale();
    for (const p of S.people) drawPerson(p, s);
    // draw the selected person last so that its keypoints are on top
    if (S.sel && S.sel.els) S.sel.els.g.parentNode.appendChild(S.sel.els.g);
  }

  function panel() {
    const list = $("persons");
    list.replaceChildren();
    if (!S.people.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No person annotated in this image.";
      list.appendChild(li);
    }
    for (const p of S.people) {
      const li = document.createElement("li");
      li.classList.toggle("selected", p === S.sel);
      li.classList.toggle("rejected", p.rejected);
      const name = document.createElement("span");
      name.className = "pname";
      const n = p.kp.filter((q) => q.v > 0).length;
      name.textContent = `#${p.ann.id} · ${n}/17`;
      name.addEventListener("click", () => select(p, -1));
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.appendChild(name);
      const review = p.ann.review || {};
      const badges = [];
      if (isDirty(p)) badges.push(["unsaved", "dirty"]);
      if (p.rejected) badges.push(["rejected", "bad"]);
      else if (review.status === "accepted" || p.accept) badges.push(["accepted", "good"]);
      if (review.needs_refit) badges.push(["needs refit", "warn"]);
      if (p.conflict) badges.push(["conflict", "bad"]);
      for (const [text, cls] of badges) {
        const b = document.createElement("span");
        b.className = "badge " + cls;
        b.textContent = text;
        meta.appendChild(b);
      }
      li.appendChild(meta);
      const actions = document.createElement("div");
      actions.className = "actions";
      const accept = document.createElement("button");
      accept.id = `accept-${p.ann.id}`;
      accept.textContent = "Accept";
      accept.title = "Mark this person as reviewed and correct (A)";
      accept.disabled = !p.rejected && (review.status === "accepted" || p.accept);
      accept.addEventListener("click", () => acceptPerson(p));
      const reject = document.createElement("button");
      reject.id = `reject-${p.ann.id}`;
      reject.textContent = p.rejected ? "Restore" : "Reject";
      reject.className = p.rejected ? "" : "danger";
      reject.title = "Reject this person: kept in the file, skipped downstream (R)";
      reject.addEventListener("click", () => toggleReject(p));
      actions.append(accept, reject);
      li.appendChild(actions);
      list.appendChild(li);
    }
    table();
    $("save").disabled = S.busy || !S.people.some(isDirty);
  }

  function table() {
    const body = $("kptable").tBodies[0];
    body.replaceChildren();
    const p = S.sel;
    $("kptitle").textContent = p ? `Keypoints of #${p.ann.id}` : "Keypoints (select a person)";
    if (!p) return;
    p.kp.forEach((q, k) => {
      const tr = document.createElement("tr");
      tr.classList.toggle("selected", k === S.selK);
      const dot = document.createElement("td");
      const swatch = document.createElement("span");
      swatch.className = "swatch " + sideOf(NAMES[k]);
      dot.appendChild(swatch);
      const name = document.createElement("td");
      name.className = "kname";
      name.textContent = NAMES[k];
      name.addEventListener("click", () => select(p, k));
      const vis = document.createElement("td");
      vis.className = "seg";
      for (const v of [2, 1, 0]) {
        const b = document.createElement("button");
        b.id = `vis-${p.ann.id}-${k}-${v}`;
        b.textContent = String(v);
        b.title = ["unlabelled", "labelled, occluded", "visible"][v];
        b.classList.toggle("on", q.v === v);
        b.addEventListener("click", () => { select(p, k); setVisibility(p, k, v); });
        vis.appendChild(b);
      }
      tr.append(dot, name, vis);
      body.appendChild(tr);
    });
  }

  function select(p, k) {
    S.sel = p;
    S.selK = k;
    redraw();
    panel();
  }

  function changed(p) {
    p.conflict = false;
    redraw();
    panel();
  }

  function acceptPerson(p) {
    p.rejected = false;
    p.accept = !(p.ann.review && p.ann.review.status === "accepted") || isRejected(p.ann);
    changed(p);
  }

  function toggleReject(p) {
    p.rejected = !p.rejected;
    if (p.rejected) p.accept = false;
    changed(p);
  }

  // ------------------------------------------------------------------------------------------ dragging
  function toImage(e) {
    const pt = svg.createSVGPoint();
    pt.x = e.clientX;
    pt.y = e.clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse());
  }

  function startDrag(e, p, k) {
    if (e.button !== 0) return;
    e.preventDefault();
    e.stopPropagation();
    const start = toImage(e);
    S.drag = { p, k, start, orig: { x: p.kp[k].x, y: p.kp[k].y }, sx: e.clientX, sy: e.clientY, moved: false };
    select(p, k);
  }

  window.addEventListener("pointermove", (e) => {
    const d = S.drag;
    if (!d) return;
    if (!d.moved && Math.hypot(e.clientX - d.sx, e.clientY - d.sy) < 3) return;
    d.moved = true;
    const at = toImage(e);
    const q = d.p.kp[d.k];
    q.x = clamp(d.orig.x + at.x - d.start.x, 0, S.page.image.width);
    q.y = clamp(d.orig.y + at.y - d.start.y, 0, S.page.image.height);
    drawPerson(d.p, scale());
  });

  window.addEventListener("pointerup", () => {
    const d = S.drag;
    S.drag = null;
    if (d && d.moved) changed(d.p);
  });

  // zoom (wheel, about the cursor) and pan (drag the background); F fits the image again
  function setView(v) {
    S.view = v;
    svg.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
    redraw();
  }

  svg.addEventListener("wheel", (e) => {
    if (!S.view) return;
    e.preventDefault();
    const at = toImage(e);
    const w = clamp(S.view.w * Math.exp(e.deltaY * 0.0015), S.fit.w / 40, S.fit.w);
    const k = w / S.view.w;
    setView({ x: at.x - (at.x - S.view.x) * k, y: at.y - (at.y - S.view.y) * k, w, h: S.view.h * k });
  }, { passive: false });

  svg.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || !(e.target === svg || ["photo", "backdrop", "nophoto"].includes(e.target.id))) return;
    S.pan = { sx: e.clientX, sy: e.clientY, view: { ...S.view }, moved: false };
  });

  window.addEventListener("pointermove", (e) => {
    const pan = S.pan;
    if (!pan || !S.view) return;
    const dx = e.clientX - pan.sx, dy = e.clientY - pan.sy;
    if (!pan.moved && Math.hypot(dx, dy) < 3) return;
    pan.moved = true;
    const s = scale();
    setView({ ...pan.view, x: pan.view.x - dx / s, y: pan.view.y - dy / s });
  });

  window.addEventListener("pointerup", () => {
    if (S.pan && !S.pan.moved) select(null, -1);
    S.pan = null;
  });

  // ------------------------------------------------------------------------------------------ pages
  function status(text, kind, action) {
    const box = $("status");
    box.className = "status " + (kind || "");
    box.replaceChildren(document.createTextNode(text));
    if (action) {
      const b = document.createElement("button");
      b.textContent = action[0];
      b.addEventListener("click", action[1]);
      box.append(" ", b);
    }
  }

  async function load(index, force) {
    if (S.count) index = clamp(index, 0, S.count - 1);
    if (!force && S.people.some(isDirty) && !window.confirm("This image has unsaved changes. Leave it anyway?")) {
      $("index").value = S.index + 1;
      return;
    }
    const r = await api(`/api/page/${index}`);
    if (!r.ok) {
      status(r.body.error || `cannot load image ${index + 1}`, "error");
      return;
    }
    const page = r.body;
    S.page = page;
    S.index = page.index;
    S.count = page.count;
    S.people = page.annotations.map(makePerson);
    S.sel = S.people.length ? S.people[0] : null;
    S.selK = -1;
    const { width: w, height: h, file_name: fileName } = page.image;
    const m = 0.03 * Math.max(w, h);
    S.fit = { x: -m, y: -m, w: w + 2 * m, h: h + 2 * m };
    svg.setAttribute("viewBox", `${S.fit.x} ${S.fit.y} ${S.fit.w} ${S.fit.h}`);
    S.view = { ...S.fit };
    for (const id of ["backdrop", "photo"]) {
      $(id).setAttribute("width", w);
      $(id).setAttribute("height", h);
    }
    const photo = $("photo");
    const missing = $("nophoto");
    if (page.image_url) {
      photo.setAttribute("href", withToken("/" + page.image_url));
      photo.classList.remove("hidden");
      missing.textContent = "";
    } else {
      photo.removeAttribute("href");
      photo.classList.add("hidden");
      missing.setAttribute("x", w / 2);
      missing.setAttribute("y", h / 2);
      missing.setAttribute("font-size", Math.max(w, h) / 40);
      missing.textContent = `no image file images/${fileName} (pose-only dataset?)`;
    }
    $("index").value = S.index + 1;
    $("index").max = S.count;
    $("count").textContent = S.count;
    $("file").textContent = `${page.data_file} · image ${page.image.id} · ${fileName} · ${w}×${h}`;
    $("frame3d").textContent = page.has_3d ? "3D: edits flag a refit" : "2D only";
    $("prev").disabled = S.index === 0;
    $("next").disabled = S.index >= S.count - 1;
    history.replaceState(null, "", location.pathname + location.search + "#" + (S.index + 1));
    build();
    panel();
    status(`Image ${S.index + 1} of ${S.count}: ${S.people.length} ${S.people.length === 1 ? "person" : "people"}.`);
    document.body.dataset.page = String(S.index);
  }

  async function save() {
    const dirty = S.people.filter(isDirty);
    if (S.busy || !dirty.length) return;
    S.busy = true;
    $("save").disabled = true;
    status("Saving…", "");
    const errors = [];
    let saved = 0;
    let conflict = false;
    for (const p of dirty) {
      const body = { etag: p.etag, rejected: p.rejected };
      if (kpChanged(p)) body.keypoints = p.kp.flatMap((q) => (q.v > 0 ? [q.x, q.y, q.v] : [0, 0, 0]));
      const r = await api(`/api/annotation/${p.ann.id}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (r.ok) {
        const fresh = makePerson(r.body);
        Object.assign(p, { ann: fresh.ann, etag: fresh.etag, kp: fresh.kp, rejected: fresh.rejected, accept: false });
        saved += 1;
      } else {
        p.conflict = r.status === 409;
        conflict = conflict || p.conflict;
        errors.push(`#${p.ann.id}: ${r.body.error || "HTTP " + r.status}`);
      }
    }
    S.busy = false;
    redraw();
    panel();
    if (errors.length) {
      status(`Saved ${saved}; not saved: ${errors.join("; ")}`, "error",
        conflict ? ["Reload image", () => load(S.index, true)] : null);
    } else {
      status(`Saved ${saved} ${saved === 1 ? "person" : "people"}.`, "ok");
    }
  }

  // ------------------------------------------------------------------------------------------ wiring
  $("prev").addEventListener("click", () => load(S.index - 1));
  $("next").addEventListener("click", () => load(S.index + 1));
  $("save").addEventListener("click", save);
  $("goto").addEventListener("submit", (e) => {
    e.preventDefault();
    load((parseInt($("index").value, 10) || 1) - 1);
  });
  window.addEventListener("resize", redraw);
  window.addEventListener("beforeunload", (e) => {
    if (S.people.some(isDirty)) {
      e.preventDefault();
      e.returnValue = "";
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement) return;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") {
      e.preventDefault();
      save();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const p = S.sel;
    switch (e.key) {
      case "ArrowLeft": load(S.index - 1); break;
      case "ArrowRight": load(S.index + 1); break;
      case "s": case "S": save(); break;
      case "v": case "V":
        if (p && S.selK >= 0) setVisibility(p, S.selK, { 2: 1, 1: 0, 0: 2 }[p.kp[S.selK].v]);
        break;
      case "r": case "R": if (p) toggleReject(p); break;
      case "a": case "A": if (p) acceptPerson(p); break;
      case "Escape": select(null, -1); break;
      case "f": case "F": if (S.fit) setView({ ...S.fit }); break;
      default: return;
    }
    e.preventDefault();
  });

  (async () => {
    const r = await api("/api/info");
    if (!r.ok) {
      status(r.body.error || "cannot reach the review server", "error");
      return;
    }
    NAMES = r.body.keypoints;
    SKELETON = r.body.skeleton;
    S.count = r.body.count;
    const fromHash = parseInt(location.hash.slice(1), 10);
    await load(Number.isFinite(fromHash) ? fromHash - 1 : 0, true);
  })();
})();
