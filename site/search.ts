// The search index: one document per h2 section of every page's prose (not its code, tests,
// hints or solution, which would bury the lesson that explains a word under the ones that
// merely use it). minisearch builds it here; the page loads it as a script, so search works
// from file:// as well as from a server.
import MiniSearch from 'minisearch';
import { plainText, sections } from './html.ts';

export interface Searchable {
  file: string;
  title: string;
  /** The page's prose, as HTML with ids on its h2s. */
  html: string;
}

interface Doc {
  id: string;
  url: string;
  /** The page's title, searched only on its opening section: otherwise every section of a
   * page whose title has the word ranks the same, above the sections that explain it. */
  title: string;
  /** The page's title, shown with every result. */
  page: string;
  heading: string;
  text: string;
}

// Shared by the build and the page: both sides must agree on the fields.
const OPTIONS = { fields: ['title', 'heading', 'text'], storeFields: ['url', 'page', 'heading'] };
const SEARCH_OPTIONS = { prefix: true, fuzzy: 0.15, combineWith: 'AND', boost: { title: 3, heading: 2 } };

/** search-index.js: sets window.WORKBOOK_SEARCH for assets/site.js. */
export function searchIndexScript(pages: Searchable[]): { script: string; documents: number } {
  const docs: Doc[] = pages.flatMap((p) =>
    sections(p.html)
      .map((s) => ({
        id: `${p.file}#${s.id}`,
        url: s.id ? `${p.file}#${s.id}` : p.file,
        title: s.id ? '' : p.title,
        page: p.title,
        heading: s.heading,
        text: plainText(s.html.replace(/<pre[\s\S]*?<\/pre>|<figure[\s\S]*?<\/figure>/g, ' ')),
      }))
      .filter((d) => d.text || d.heading),
  );
  const mini = new MiniSearch<Doc>(OPTIONS);
  mini.addAll(docs);
  const payload = { options: OPTIONS, searchOptions: SEARCH_OPTIONS, index: mini.toJSON() };
  return { script: `window.WORKBOOK_SEARCH = ${JSON.stringify(payload)};\n`, documents: docs.length };
}
