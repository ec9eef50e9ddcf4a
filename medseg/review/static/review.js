/* medseg review site: the index page (sortable, filterable table of scans) and the scan page
 * (NiiVue viewer, lesion table, reviewer marks). Plain script, no modules: the pages open from
 * file:// as well as from `medseg review --serve`. Data comes from data/site.js (window.MEDSEG_SITE)
 * and data/case_<name>.js (window.MEDSEG_SCAN). Everything taken from the data is inserted as
 * text, never as HTML. */
(function () {
  "use strict";

  var SITE = window.MEDSEG_SITE;
  var SERVED = location.protocol === "http:" || location.protocol === "https:";
  var FORMAT = "medseg-review-marks/1";
  var FOLDER = location.pathname.replace(/[^/]*$/, "");  // the site's folder: a rewritten site keeps its marks
  var STORE = "medseg-review-marks:" + FOLDER;
  var ORDER = "medseg-review-order:" + FOLDER;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmt(value, digits) {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }
  function pageOf(name) {
    var scan = SITE.scans.find(function (s) { return s.name === name; });
    return scan ? scan.page : "index.html";
  }

  /* ---------------------------------------------------------------- reviewer marks */
  var Marks = {
    map: new Map(),
    key: function (c, kind, id) { return c + "|" + kind + "|" + (id === null || id === undefined ? "" : id); },
    load: function (list) {
      var self = this;
      (list || []).forEach(function (m) { self.map.set(self.key(m.case, m.kind, m.id), m); });
    },
    get: function (c, kind, id) { return this.map.get(this.key(c, kind, id)); },
    set: function (mark) {
      var k = this.key(mark.case, mark.kind, mark.id);
      if (!mark.decision && !mark.comment) this.map.delete(k); else this.map.set(k, mark);
      save();
    },
    document: function () { return { format: FORMAT, marks: Array.from(this.map.values()) }; }
  };

  function setState(text) {
    var node = document.getElementById("save-state");
    if (node) node.textContent = text;
  }

  var saveTimer = null;
  function save() {
    document.body.dataset.marks = String(Marks.map.size);
    if (!SERVED) {
      try { localStorage.setItem(STORE, JSON.stringify(Marks.document())); } catch (e) { /* storage off */ }
      setState(Marks.map.size + " mark(s) kept in this browser: download them to keep them");
      return;
    }
    clearTimeout(saveTimer);
    setState("saving…");
    saveTimer = setTimeout(function () {
      fetch("api/marks", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Marks.document()) })
        .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
        .then(function (res) {
          if (!res[0]) throw new Error(res[1].error || "refused");
          document.body.dataset.saved = String(res[1].saved);
          setState(res[1].saved + " mark(s) saved to " + res[1].file);
        })
        .catch(function (err) { setState("not saved: " + err.message); });
    }, 250);
  }

  function loadMarks() {
    Marks.load(SITE.marks);
    if (SERVED) {
      return fetch("api/marks").then(function (r) { return r.json(); }).then(function (doc) {
        Marks.map.clear();
        Marks.load(doc.marks);
        setState(Marks.map.size + " mark(s) in " + SITE.marks_file);
      }).catch(function () { setState("marks could not be read from the server"); });
    }
    try {
      var kept = JSON.parse(localStorage.getItem(STORE) || "null");
      if (kept && kept.format === FORMAT) Marks.load(kept.marks);
    } catch (e) { /* storage off */ }
    setState(Marks.map.size + " mark(s)");
    return Promise.resolve();
  }

  function downloadMarks() {
    var blob = new Blob([JSON.stringify(Marks.document(), null, 1)], { type: "application/json" });
    var a = el("a", { href: URL.createObjectURL(blob), download: SITE.marks_file });
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  function ruleText() {
    var r = SITE.rule;
    var t = r.match_threshold === null ? "" : " (threshold " + r.match_threshold + ")";
    return "Lesion status: matching rule '" + r.matching + "'" + t + ", " + r.connectivity + "-connected lesions" +
      (r.dilate ? ", reference lesions grown by " + r.dilate + " voxel(s)" : "") +
      (r.one_to_one ? ", one-to-one" : ", many-to-one") +
      ". A predicted lesion is matched or a false positive, a reference lesion matched or missed.";
  }

  /* ---------------------------------------------------------------- index page */
  var sortState = { key: "worst", dir: 1 };

  function worstKey(s) {
    return [-(s.missed + s.false_positives), s.dice === null ? 2 : s.dice, -s.lesions];
  }
  function compare(a, b) {
    if (sortState.key === "worst") {
      var ka = worstKey(a), kb = worstKey(b);
      for (var i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] < kb[i] ? -1 : 1;
      return a.name < b.name ? -1 : 1;
    }
    var va = sortState.key === "decision" ? scanDecision(a.name) : a[sortState.key];
    var vb = sortState.key === "decision" ? scanDecision(b.name) : b[sortState.key];
    if (va === vb) return 0;
    if (va === null || va === undefined) return 1;
    if (vb === null || vb === undefined) return -1;
    return (va < vb ? -1 : 1) * sortState.dir;
  }
  function scanDecision(name) {
    var m = Marks.get(name, "scan", null);
    return m ? m.decision : "";
  }
  function visibleScans() {
    var text = document.getElementById("f-text").value.toLowerCase();
    var missed = document.getElementById("f-missed").checked;
    var fp = document.getElementById("f-fp").checked;
    var open = document.getElementById("f-open").checked;
    return SITE.scans.filter(function (s) {
      return (!missed || s.missed > 0) && (!fp || s.false_positives > 0) && (!open || !scanDecision(s.name)) &&
        s.name.toLowerCase().indexOf(text) >= 0;
    }).sort(compare);
  }
  function scanRow(s) {
    var tr = el("tr", { "data-name": s.name });
    var img = el("img", { src: s.thumb, class: "thumb", width: s.thumb_size[0], height: s.thumb_size[1],
      alt: "axial slice " + s.thumb_slice + " of " + s.name, title: "axial slice " + s.thumb_slice });
    var link = el("a", { href: s.page });
    link.appendChild(img);
    tr.appendChild(el("td")).appendChild(link);
    tr.appendChild(el("td")).appendChild(el("a", { href: s.page }, s.name));
    [[s.lesions, 0], [s.volume_mm3, 0], [s.dice, 3], [s.lesion_recall, 3], [s.has_ref ? s.missed : null, 0],
      [s.has_ref ? s.false_positives : null, 0]].forEach(function (v) {
      tr.appendChild(el("td", { class: "num" }, fmt(v[0], v[1])));
    });
    var mark = Marks.get(s.name, "scan", null);
    var td = el("td", {}, mark ? (mark.decision || "comment") : "");
    if (mark) { td.className = "decision-" + mark.decision; td.title = mark.comment || ""; }
    tr.appendChild(td);
    return tr;
  }
  function renderIndex() {
    var rows = visibleScans();
    var body = document.querySelector("#scans tbody");
    body.replaceChildren.apply(body, rows.map(scanRow));
    document.getElementById("count").textContent = rows.length + " of " + SITE.scans.length + " scan(s)";
    document.querySelectorAll("th[data-sort]").forEach(function (th) {
      th.classList.toggle("sorted-asc", th.dataset.sort === sortState.key && sortState.dir > 0);
      th.classList.toggle("sorted-desc", th.dataset.sort === sortState.key && sortState.dir < 0);
    });
    try { sessionStorage.setItem(ORDER, JSON.stringify(rows.map(function (s) { return s.name; }))); } catch (e) { }
  }
  function figure(file, caption, href) {
    var fig = el("figure");
    var img = el("img", { src: file, alt: caption, loading: "lazy" });
    if (href) { var a = el("a", { href: href }); a.appendChild(img); fig.appendChild(a); } else fig.appendChild(img);
    fig.appendChild(el("figcaption", {}, caption));
    return fig;
  }
  function initIndex() {
    document.getElementById("meta").textContent = SITE.scans.length + " scan(s), written " + SITE.created +
      " by medseg " + SITE.version + (SERVED ? "; marks are saved to " + SITE.marks_file + " beside the masks" :
      "; opened from a file: marks stay in this browser until downloaded");
    document.getElementById("rule").textContent = ruleText();
    if (SITE.errors.length) document.getElementById("errors").textContent = "Not shown: " + SITE.errors.join("; ");
    document.querySelectorAll("th[data-sort]").forEach(function (th) {
      th.addEventListener("click", function () {
        sortState = { key: th.dataset.sort, dir: sortState.key === th.dataset.sort ? -sortState.dir : 1 };
        renderIndex();
      });
    });
    document.getElementById("worst-first").addEventListener("click", function () {
      sortState = { key: "worst", dir: 1 };
      renderIndex();
    });
    ["f-missed", "f-fp", "f-open", "f-text"].forEach(function (id) {
      document.getElementById(id).addEventListener("input", renderIndex);
    });
    document.getElementById("download-marks").addEventListener("click", downloadMarks);
    var plots = document.getElementById("plots");
    SITE.pictures.forEach(function (p) { plots.appendChild(figure(p.file, p.title)); });
    if (!SITE.pictures.length) plots.textContent = "No reference given: no FROC, volume or Dice plots.";
    var crops = document.getElementById("crops");
    SITE.scans.forEach(function (s) {
      s.crops.forEach(function (c) { crops.appendChild(figure(c.file, s.name + " " + c.key, s.page + "#" + c.key)); });
    });
    if (!crops.children.length) crops.textContent = "None.";
    loadMarks().then(renderIndex);
  }

  /* ---------------------------------------------------------------- scan page */
  var nv = null;
  var SCAN = window.MEDSEG_SCAN;
  var current = -1;
  var LAYOUTS = { multiplanar: "sliceTypeMultiplanar", axial: "sliceTypeAxial", coronal: "sliceTypeCoronal",
    sagittal: "sliceTypeSagittal", render: "sliceTypeRender" };

  function crosshairMM() {
    return Array.from(nv.frac2mm(nv.scene.crosshairPos, 0, true)).slice(0, 3);
  }
  function showLocation() {
    var mm = crosshairMM();
    var viewer = document.getElementById("viewer");
    viewer.dataset.crosshairMm = JSON.stringify(mm.map(function (v) { return Math.round(v * 1000) / 1000; }));
    document.getElementById("location").textContent = "crosshair at " + mm.map(function (v) { return v.toFixed(2); })
      .join(", ") + " mm (" + (SCAN.space || "world, scanner RAS") + ")";
  }
  function goTo(mm) {
    nv.scene.crosshairPos = nv.mm2frac(mm, 0, true);
    nv.drawScene();
    nv.createOnLocationChange();
    showLocation();
  }
  function screenPosition(mm) {
    var frac = nv.mm2frac(mm, 0, true);
    var hit = nv.frac2canvasPosWithTile(frac, nv.opts.sliceType);
    if (!hit) return null;
    var canvas = document.getElementById("gl");
    var rect = canvas.getBoundingClientRect();
    var k = rect.width / canvas.width;
    return [rect.left + hit.pos[0] * k, rect.top + hit.pos[1] * k];
  }
  function selectLesion(i) {
    var rows = document.querySelectorAll("#lesions tbody tr");
    if (!rows.length) return;
    current = (i + rows.length) % rows.length;
    rows.forEach(function (r, j) { r.classList.toggle("selected", j === current); });
    var list = document.getElementById("lesion-list"), row = rows[current];
    if (row.offsetTop < list.scrollTop + row.offsetHeight || row.offsetTop + row.offsetHeight > list.scrollTop + list.clientHeight) {
      list.scrollTop = row.offsetTop - list.clientHeight / 3;  // within the table's own scroll box: the page stays put
    }
    var lesion = SCAN.lesions[current];
    document.getElementById("viewer").dataset.lesion = lesion.key;
    goTo(lesion.centroid_mm);
  }
  function markLesion(lesion, decision, comment) {
    var old = Marks.get(SCAN.name, lesion.kind, lesion.id) || {};
    Marks.set({ case: SCAN.name, kind: lesion.kind, id: lesion.id,
      decision: decision === undefined ? (old.decision || "") : decision,
      comment: comment === undefined ? (old.comment || "") : comment,
      status: lesion.status, centroid_mm: lesion.centroid_mm });
    renderLesions();
  }
  function decisionButtons(lesion, mark) {
    var td = el("td", { class: "lesion-actions" });
    ["accept", "reject"].forEach(function (d) {
      var b = el("button", { type: "button", "data-decision": d, title: d }, d === "accept" ? "✓" : "✗");
      if (mark && mark.decision === d) b.classList.add("on");
      b.addEventListener("click", function (ev) {
        ev.stopPropagation();
        markLesion(lesion, mark && mark.decision === d ? "" : d);
      });
      td.appendChild(b);
    });
    var input = el("input", { type: "text", class: "comment", placeholder: "comment", maxlength: "2000" });
    input.value = mark ? (mark.comment || "") : "";
    input.addEventListener("click", function (ev) { ev.stopPropagation(); });
    input.addEventListener("change", function () { markLesion(lesion, undefined, input.value); });
    td.appendChild(input);
    return td;
  }
  function lesionRow(lesion, i) {
    var mark = Marks.get(SCAN.name, lesion.kind, lesion.id);
    var tr = el("tr", { id: lesion.key, "data-key": lesion.key,
      "data-centroid-mm": JSON.stringify(lesion.centroid_mm) });
    tr.appendChild(el("td", {}, (lesion.kind === "pred" ? "predicted " : "reference ") + lesion.id));
    tr.appendChild(el("td", { class: "num" }, fmt(lesion.volume_mm3, 1)));
    tr.appendChild(el("td", { class: "num" }, fmt(lesion.max_prob, 2)));
    tr.appendChild(el("td", { class: "num" }, fmt(lesion.mean_prob, 2)));
    tr.appendChild(el("td", {}, lesion.centroid_mm.map(function (v) { return v.toFixed(1); }).join(", ")));
    var matches = lesion.matches.length ? " (" + (lesion.kind === "pred" ? "reference " : "predicted ") +
      lesion.matches.join(", ") + ")" : "";
    tr.appendChild(el("td", { class: "status-" + lesion.status }, lesion.status.replace("_", " ") + matches));
    tr.appendChild(decisionButtons(lesion, mark));
    if (i === current) tr.classList.add("selected");
    tr.addEventListener("click", function () { selectLesion(i); });
    return tr;
  }
  function renderLesions() {
    var body = document.querySelector("#lesions tbody");
    body.replaceChildren.apply(body, SCAN.lesions.map(lesionRow));
    var mark = Marks.get(SCAN.name, "scan", null);
    document.querySelectorAll("#scan-review .decide").forEach(function (b) {
      b.classList.toggle("on", !!mark && mark.decision === b.dataset.decision);
    });
    document.getElementById("scan-comment").value = mark ? (mark.comment || "") : "";
  }
  function markScan(decision, comment) {
    var old = Marks.get(SCAN.name, "scan", null) || {};
    Marks.set({ case: SCAN.name, kind: "scan", id: null,
      decision: decision === undefined ? (old.decision || "") : decision,
      comment: comment === undefined ? (old.comment || "") : comment });
    renderLesions();
  }
  function neighbours() {
    var order = null;
    try { order = JSON.parse(sessionStorage.getItem(ORDER) || "null"); } catch (e) { }
    if (!order || order.indexOf(SCAN.name) < 0) order = SITE.scans.map(function (s) { return s.name; });
    var i = order.indexOf(SCAN.name);
    return [order[(i - 1 + order.length) % order.length], order[(i + 1) % order.length]];
  }
  function setLayout(name) {
    nv.opts.multiplanarShowRender = niivue.SHOW_RENDER.ALWAYS;
    nv.setSliceType(nv[LAYOUTS[name]]);
  }
  function onKey(ev) {
    if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var nb = neighbours();
    if (ev.key === "n") selectLesion(current + 1);
    else if (ev.key === "p") selectLesion(current - 1);
    else if (ev.key === "]") location.href = pageOf(nb[1]);
    else if (ev.key === "[") location.href = pageOf(nb[0]);
    else if ((ev.key === "a" || ev.key === "r") && current >= 0) {
      var mark = Marks.get(SCAN.name, SCAN.lesions[current].kind, SCAN.lesions[current].id);
      var d = ev.key === "a" ? "accept" : "reject";
      markLesion(SCAN.lesions[current], mark && mark.decision === d ? "" : d);
    } else return;
    ev.preventDefault();
  }
  function wireViewerControls(pred, ref) {
    var opacity = document.getElementById("opacity");
    function applyOverlays() {
      var o = Number(opacity.value);
      nv.setOpacity(nv.volumes.indexOf(pred), document.getElementById("show-pred").checked ? o : 0);
      if (ref) nv.setOpacity(nv.volumes.indexOf(ref), document.getElementById("show-ref").checked ? o : 0);
    }
    ["opacity", "show-pred", "show-ref"].forEach(function (id) {
      document.getElementById(id).addEventListener("input", applyOverlays);
    });
    if (!ref) document.getElementById("show-ref").disabled = true;
    document.getElementById("layout").addEventListener("change", function (ev) { setLayout(ev.target.value); });
    var lo = document.getElementById("win-lo"), hi = document.getElementById("win-hi");
    function applyWindow() {
      nv.volumes[0].cal_min = Number(lo.value);
      nv.volumes[0].cal_max = Number(hi.value);
      nv.updateGLVolume();
    }
    function resetWindow() {
      lo.value = SCAN.volumes.window[0];
      hi.value = SCAN.volumes.window[1];
      applyWindow();
    }
    lo.addEventListener("change", applyWindow);
    hi.addEventListener("change", applyWindow);
    document.getElementById("win-reset").addEventListener("click", resetWindow);
    nv.onIntensityChange = function () {
      lo.value = nv.volumes[0].cal_min.toFixed(1);
      hi.value = nv.volumes[0].cal_max.toFixed(1);
    };
    resetWindow();
    applyOverlays();
  }
  function describeScan() {
    var m = SCAN.metrics;
    document.getElementById("metrics").textContent = m ? "Dice " + m.dice.toFixed(3) + ", lesion recall " +
      m.lesion_recall.toFixed(3) + " (" + m.tp + " of " + m.gt_lesions + " reference lesions found), " + m.fp +
      " false positive(s), " + m.fn + " missed" : "No reference: lesion statuses are not known.";
    var v = SCAN.volumes;
    var notes = [];
    if (!SCAN.files.image) notes.push("No scan given (--images): the masks are shown on an empty background.");
    if (v.step > 1) notes.push("Display copy: every " + v.step + " voxels (" + v.display_shape.join("×") + " of " +
      v.shape.join("×") + "); lesion coordinates are those of the full-resolution masks.");
    document.getElementById("notes").textContent = notes.join(" ");
    document.getElementById("rule").textContent = ruleText();
    var crops = document.getElementById("crops");
    SCAN.crops.forEach(function (c) { crops.appendChild(figure(c.file, c.key)); });
  }
  function loadVolume(base64, name, colormap, opacity, calMin, calMax) {
    return niivue.NVImage.loadFromBase64({ base64: base64, name: name, colormap: colormap, opacity: opacity,
      cal_min: calMin, cal_max: calMax });
  }
  function initCase() {
    document.title = SCAN.name + " - " + SITE.title;
    document.getElementById("title").textContent = SCAN.name;
    var nb = neighbours();
    document.getElementById("prev-scan").href = pageOf(nb[0]);
    document.getElementById("next-scan").href = pageOf(nb[1]);
    document.getElementById("download-marks").addEventListener("click", downloadMarks);
    document.querySelectorAll("#scan-review .decide").forEach(function (b) {
      b.addEventListener("click", function () {
        var mark = Marks.get(SCAN.name, "scan", null);
        markScan(mark && mark.decision === b.dataset.decision ? "" : b.dataset.decision);
      });
    });
    document.getElementById("scan-comment").addEventListener("change", function (ev) { markScan(undefined, ev.target.value); });
    describeScan();
    nv = new niivue.Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true, crosshairColor: [1, 1, 0, 0.8],
      crosshairGap: 12,
      dragAndDropEnabled: false, isColorbar: false, logLevel: "error", multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS });
    var v = SCAN.volumes;
    return nv.attachTo("gl").then(function () {
      return Promise.all([
        loadVolume(v.image, "scan.nii.gz", "gray", 1, v.window[0], v.window[1]),
        loadVolume(v.pred, "prediction.nii.gz", "red", 0.5, 0.5, 1),
        v.ref ? loadVolume(v.ref, "reference.nii.gz", "green", 0.5, 0.5, 1) : Promise.resolve(null)
      ]);
    }).then(function (vols) {
      vols.forEach(function (vol) { if (vol) nv.addVolume(vol); });
      nv.onLocationChange = showLocation;
      var view = new URLSearchParams(location.search).get("view");
      view = LAYOUTS[view] ? view : "multiplanar";
      document.getElementById("layout").value = view;
      setLayout(view);
      wireViewerControls(vols[1], vols[2]);
      return loadMarks();
    }).then(function () {
      renderLesions();
      document.addEventListener("keydown", onKey);
      var wanted = SCAN.lesions.findIndex(function (l) { return "#" + l.key === location.hash; });
      if (SCAN.lesions.length) selectLesion(wanted >= 0 ? wanted : 0); else showLocation();
      document.body.dataset.ready = "1";
    });
  }

  window.medsegReview = {
    crosshairMM: function () { return nv ? crosshairMM() : null; },
    goTo: function (mm) { goTo(mm); },
    screenPosition: function (mm) { return screenPosition(mm); },
    setLayout: function (name) { setLayout(name); },
    marks: function () { return Marks.document(); }
  };
  function start() {
    var run = document.body.dataset.page === "case" ? initCase : initIndex;
    Promise.resolve().then(run).catch(function (err) {
      document.body.dataset.failed = String(err);
      console.error("medseg review: " + err);
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
