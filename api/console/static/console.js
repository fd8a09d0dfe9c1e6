// docnum console: validate-as-you-type for the template editor. No framework, no CDN.
// The server renders the validation and preview fragments (same Jinja, same language), this
// only posts the form as JSON and swaps the HTML in.
(function () {
  "use strict";
  var form = document.querySelector("form[data-check-url]");
  if (!form) return;
  var url = form.getAttribute("data-check-url");
  var tokenMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = tokenMeta ? tokenMeta.getAttribute("content") : "";
  var validation = document.getElementById("validation");
  var preview = document.getElementById("preview");
  var timer = null;
  var latest = 0;

  function collect() {
    var data = {};
    var fields = form.querySelectorAll("input[name], select[name]");
    for (var i = 0; i < fields.length; i++) {
      var el = fields[i];
      if (el.type === "hidden" || el.name === "change_reason") continue;
      data[el.name] = el.value;
    }
    return data;
  }

  // The refused save's error box describes the template that was posted. Once the live check
  // answers for another template (or reset), the check is the truth: the box goes.
  function dropStaleSaveError(data) {
    var box = document.getElementById("save-error");
    if (!box || box.getAttribute("data-about-template") !== "1") return;
    if (data.template !== box.getAttribute("data-template") ||
        data.reset !== box.getAttribute("data-reset")) {
      box.parentNode.removeChild(box);
    }
  }

  function check() {
    var mine = ++latest;
    var data = collect();
    form.setAttribute("data-checking", "1");
    fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf,
                "Accept": "application/json"},
      body: JSON.stringify(data)
    }).then(function (response) {
      return response.json();
    }).then(function (answer) {
      if (mine !== latest) return;  // a newer keystroke is on its way
      if (answer.validation_html !== undefined) validation.innerHTML = answer.validation_html;
      if (answer.preview_html !== undefined) preview.innerHTML = answer.preview_html;
      dropStaleSaveError(data);
      form.setAttribute("data-checked", String(mine));
      form.removeAttribute("data-checking");
    }).catch(function () {
      if (mine === latest) form.removeAttribute("data-checking");
    });
  }

  function soon(event) {
    if (event.target && event.target.name === "change_reason") return;
    window.clearTimeout(timer);
    timer = window.setTimeout(check, 250);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
})();
