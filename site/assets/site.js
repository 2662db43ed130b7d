// What the pages do with script: the menu on a phone, the theme toggle, copy buttons,
// hints one at a time, the "on this page" marker, and search. Every page reads fine
// without it. Plain browser JavaScript, no build step, works from file:// too.
(() => {
  const root = document.documentElement;

  // The menu: on a phone the sidebar is hidden until asked for.
  const menuButton = document.querySelector('.menu-button');
  const setMenu = (open) => {
    document.body.classList.toggle('menu-open', open);
    menuButton.setAttribute('aria-expanded', String(open));
  };
  menuButton.addEventListener('click', () => setMenu(!document.body.classList.contains('menu-open')));
  document.querySelectorAll('.sidebar a').forEach((a) => a.addEventListener('click', () => setMenu(false)));

  // The theme follows the system until the reader picks one; the pick is remembered.
  const dark = () => root.dataset.theme === 'dark' || (!root.dataset.theme && matchMedia('(prefers-color-scheme: dark)').matches);
  const toggle = document.querySelector('.theme-toggle');
  const labelToggle = () => toggle.setAttribute('aria-label', dark() ? 'Switch to the light theme' : 'Switch to the dark theme');
  labelToggle();
  toggle.addEventListener('click', () => {
    root.dataset.theme = dark() ? 'light' : 'dark';
    try { localStorage.setItem('theme', root.dataset.theme); } catch { /* private mode: the choice lasts this page */ }
    labelToggle();
  });

  // A copy button on every code block.
  document.querySelectorAll('pre.shiki').forEach((pre) => {
    const box = document.createElement('div');
    box.className = 'code';
    pre.replaceWith(box);
    box.append(pre);
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'copy';
    button.textContent = 'Copy';
    button.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(pre.innerText);
        button.textContent = 'Copied';
      } catch {
        button.textContent = 'Select and copy';
      }
      setTimeout(() => { button.textContent = 'Copy'; }, 1500);
    });
    box.append(button);
  });

  // Hints one at a time: opening hint n offers hint n + 1, never sooner.
  const hints = [...document.querySelectorAll('details.hint')];
  hints.forEach((hint, i) => hint.addEventListener('toggle', () => {
    if (hint.open && hints[i + 1]) hints[i + 1].hidden = false;
  }));

  // "On this page" marks the section being read.
  const tocLinks = [...document.querySelectorAll('.toc a')];
  if (tocLinks.length && 'IntersectionObserver' in window) {
    const byId = new Map(tocLinks.map((a) => [decodeURIComponent(a.hash.slice(1)), a]));
    const observer = new IntersectionObserver((entries) => {
      const seen = entries.find((e) => e.isIntersecting);
      if (!seen) return;
      tocLinks.forEach((a) => a.classList.remove('here'));
      byId.get(seen.target.id)?.classList.add('here');
    }, { rootMargin: '0px 0px -70% 0px' });
    byId.forEach((_, id) => { const h = document.getElementById(id); if (h) observer.observe(h); });
  }

  // Search: the index is a script (search-index.js), so it loads from file:// as well as
  // from a server. It is fetched the first time the box gets focus, not on every page.
  const input = document.getElementById('search');
  const results = document.getElementById('search-results');
  let engine;
  const load = (src) => new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
  const ready = () => engine ??= load('assets/minisearch.js').then(() => load('search-index.js')).then(() => {
    const { options, searchOptions, index } = window.WORKBOOK_SEARCH;
    const mini = MiniSearch.loadJS(index, options);
    return (query) => mini.search(query, searchOptions);
  });
  let selected = -1;
  const links = () => [...results.querySelectorAll('a')];
  const select = (n) => {
    const all = links();
    selected = Math.max(-1, Math.min(n, all.length - 1));
    all.forEach((a, i) => a.setAttribute('aria-selected', String(i === selected)));
  };
  const show = async () => {
    const query = input.value.trim();
    if (!query) { results.hidden = true; return; }
    const hits = (await ready())(query).slice(0, 8);
    if (input.value.trim() !== query) return; // the reader typed on
    results.replaceChildren(...(hits.length ? hits.map((hit) => {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = hit.url;
      a.textContent = hit.page;
      if (hit.heading) { const small = document.createElement('small'); small.textContent = hit.heading; a.append(small); }
      li.append(a);
      return li;
    }) : [Object.assign(document.createElement('li'), { className: 'none', textContent: `Nothing found for “${query}”` })]));
    results.hidden = false;
    select(hits.length ? 0 : -1);
  };
  input.addEventListener('focus', () => { ready().catch(() => {}); });
  input.addEventListener('input', () => { show().catch((err) => { results.hidden = false; results.textContent = err.message; }); });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') { event.preventDefault(); select(selected + (event.key === 'ArrowDown' ? 1 : -1)); }
    if (event.key === 'Enter' && links()[selected]) links()[selected].click();
    if (event.key === 'Escape') { results.hidden = true; input.blur(); }
  });
  document.addEventListener('click', (event) => { if (!event.target.closest('.search')) results.hidden = true; });
})();
