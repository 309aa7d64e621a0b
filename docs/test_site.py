"""The built site in a real browser: headless Chromium (Debian's chromium and chromedriver)
loads pages over HTTP on loopback, the tests assert on the rendered DOM and save a
screenshot of each page.

Run after the build: ``pytest docs/test_site.py`` (``RMTL_DOCS_HTML`` points at another
build, ``RMTL_DOCS_SCREENSHOTS`` at another folder for the screenshots).
"""

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")
HERE = Path(__file__).resolve().parent
HTML = Path(os.environ.get("RMTL_DOCS_HTML", HERE / "_build" / "html"))
SHOTS = Path(os.environ.get("RMTL_DOCS_SCREENSHOTS", HERE / "_build" / "screenshots"))

# Every <img> that finished loading with a real bitmap, and those that did not.
IMAGES_JS = """
const imgs = [...document.querySelectorAll('img')];
return {loaded: imgs.filter(i => i.complete && i.naturalWidth > 0
                                && i.getBoundingClientRect().width > 0).length,
        broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)};
"""


@pytest.fixture(scope="module")
def site():
    """The built HTML served on an ephemeral loopback port."""
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built site in {HTML}: run sphinx-build -b html docs {HTML} first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    opts = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        opts.add_argument(arg)
    opts.binary_location = chromium
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def load(browser, site, page: str, shot: str) -> dict:
    """Open ``page``, bring its first figure (if any) into view, save a screenshot; return its
    title, h1 and images."""
    browser.get(f"{site}/{page}")
    browser.execute_script(
        "const f = document.querySelector('.cell_output img');"
        "if (f) f.scrollIntoView({block: 'center'});"
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SHOTS / f"{shot}.png"))
    h1 = browser.execute_script(
        "const h = document.querySelector('h1'); return h ? h.textContent : ''"
    )
    return {
        "title": browser.title,
        "h1": h1.replace("#", "").strip(),
        **browser.execute_script(IMAGES_JS),
    }


def test_index(browser, site):
    page = load(browser, site, "index.html", "index")
    assert page["title"].startswith("rmtl"), page
    assert page["h1"] == "rmtl"
    links = browser.execute_script(
        "return [...document.querySelectorAll('a')].map(a => a.getAttribute('href'))"
    )
    for target in (
        "getting_started.html",
        "method.html",
        "evidence.html",
        "gallery.html",
        "api.html",
    ):
        assert any(href and href.endswith(target) for href in links), (
            f"index has no link to {target}"
        )
    for url in (  # the paper and the authors' code
        "https://dl.acm.org/doi/10.1145/3543507.3583467",
        "https://github.com/Applied-Machine-Learning-Lab/RMTL",
    ):
        assert url in links, f"index has no link to {url}"
    assert not page["broken"], page["broken"]


# A parameter name as numpydoc renders it: names (or *args, **kwargs), comma-separated; a
# paragraph after a Parameters section would render as a bold "parameter" of many words.
PARAMETER_NAMES_JS = """
return [...document.querySelectorAll('dl.field-list > dd > dl > dt > strong')]
    .map(e => e.textContent.trim());
"""


@pytest.mark.parametrize(
    "page",
    [
        "rmtl.RMTL",
        "rmtl.SessionData",
        "rmtl.SessionEnv",
        "rmtl.collect",
        "rmtl.experiment",
        "rmtl.Trainer",
        "rmtl.History",
        "rmtl.train.chunks",
        "rmtl.balancers.Balancer",
        "rmtl.balancers.create",
        "rmtl.balancers.hyperparameters",
        "rmtl.models.Net",
        "rmtl.models.Backbone",
        # sections appended to each backbone and twin by __init_subclass__, and a few of the
        # sections tests/test_docstrings.py requires everywhere
        "rmtl.models.MMoE",
        "rmtl.torch.MMoE",
        "rmtl.datasets.SyntheticConfig",
        "rmtl.lab.stats.holm",
        "rmtl.CorruptFileError",
    ],
)
def test_api_parameters_are_names(browser, site, page):
    load(browser, site, f"generated/{page}.html", f"api_params_{page}")
    names = browser.execute_script(PARAMETER_NAMES_JS)
    assert names, f"{page}: no Parameters section rendered"
    bad = [n for n in names if not re.fullmatch(r"\*{0,2}\w+(, \*{0,2}\w+)*", n)]
    assert not bad, f"{page}: prose rendered as parameters: {bad}"


# Each exception a Raises section names, with its description (numpydoc renders the section
# as a field whose entries are the exception classes).
RAISES_JS = """
const fields = [...document.querySelectorAll('dl.field-list > dt')]
    .filter(dt => dt.textContent.trim().startsWith('Raises'));
return fields.flatMap(dt => [...dt.nextElementSibling.querySelectorAll(':scope > dl > dt')]
    .map(e => [e.textContent.trim(), e.nextElementSibling.textContent.trim()]));
"""


@pytest.mark.parametrize(
    "page, expected",
    [
        ("rmtl.models.create", {"ValueError"}),
        ("rmtl.SessionData", {"TypeError", "ValueError"}),
        ("rmtl.models.MMoE", {"ValueError"}),  # appended by __init_subclass__
        ("rmtl.lab.study.StudyConfig", {"TypeError", "ValueError"}),
        ("rmtl.ReplayBuffer", {"CorruptFileError", "FileNotFoundError"}),  # a method's
    ],
)
def test_api_raises_sections_render(browser, site, page, expected):
    load(browser, site, f"generated/{page}.html", f"api_raises_{page}")
    entries = browser.execute_script(RAISES_JS)
    browser.execute_script(  # the screenshot shows the section
        "const dt = [...document.querySelectorAll('dl.field-list > dt')]"
        ".find(d => d.textContent.trim().startsWith('Raises'));"
        "if (dt) dt.scrollIntoView({block: 'center'});"
    )
    assert browser.save_screenshot(str(SHOTS / f"api_raises_{page}.png"))
    names = {name.rsplit(".", 1)[-1] for name, _ in entries}
    assert expected <= names, f"{page}: Raises renders {sorted(names)}, expected {expected}"
    bad = [name for name, _ in entries if not re.fullmatch(r"[\w.]+", name)]
    assert not bad, f"{page}: prose rendered as exception names: {bad}"
    bare = [name for name, text in entries if not text]
    assert not bare, f"{page}: exceptions without a description: {bare}"


def test_api_pages_cite_no_spec():
    """The pages cite the paper or explain inline, never a SPEC file users do not have."""
    if not (HTML / "generated").is_dir():
        pytest.fail(f"no built API pages in {HTML / 'generated'}")
    pages = sorted(HTML.rglob("*.html"))
    citing = [
        str(p.relative_to(HTML)) for p in pages if re.search(r"SPEC (section|\d)", p.read_text())
    ]
    assert not citing, f"pages citing SPEC: {citing}"


def test_api_page_of_rmtl_class(browser, site):
    page = load(browser, site, "generated/rmtl.RMTL.html", "api_RMTL")
    assert page["h1"] == "rmtl.RMTL", page
    for member in ("rmtl.RMTL", "rmtl.RMTL.fit", "rmtl.RMTL.pretrain", "rmtl.RMTL.finetune"):
        assert browser.execute_script(f"return document.getElementById('{member}') !== null"), (
            member
        )
    assert not page["broken"], page["broken"]


def test_evidence_page(browser, site):
    page = load(browser, site, "evidence.html", "evidence")
    assert page["h1"] == "Evidence", page
    assert browser.execute_script("return document.querySelectorAll('table').length") >= 1


def test_notebook_page_shows_its_figures(browser, site):
    page = load(
        browser, site, "gallery/environment_and_critics.html", "notebook_environment_and_critics"
    )
    assert page["h1"] == "The session MDP and the critics", page
    assert page["loaded"] >= 1, f"no figure image rendered with a non-zero size: {page}"
    assert not page["broken"], page["broken"]
