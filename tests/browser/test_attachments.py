"""Attachments in the web client: a pasted screenshot with its upload progress, a thumbnail at the
recipient that opens the full-size viewer, a dropped PDF that downloads as a file, a failed upload
that says why, and all of it at phone width."""
import base64
import pathlib

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from test_message_features import no_script_errors
from test_web_client import open_conversation, sign_up, visible, wait

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "images"

# Builds a File in the page from base64 and hands it to the client as a paste (on the composer) or
# a drop (on the conversation), the way a browser does for a screenshot or a file from the desktop.
GIVE_FILE = """
const [how, name, type, data, size] = arguments;
const bytes = data !== null ? Uint8Array.from(atob(data), (c) => c.charCodeAt(0)) : new Uint8Array(size);
const transfer = new DataTransfer();
transfer.items.add(new File([bytes], name, { type }));
if (how === 'paste') {
  document.querySelector('#composer-input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }));
} else {
  const pane = document.querySelector('#message-scroller');
  pane.dispatchEvent(new DragEvent('dragover', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  pane.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
}
"""

# Remembers whether an upload progress bar was ever shown (a small file can finish between polls).
WATCH_PROGRESS = """
window.__sawProgress = false;
new MutationObserver(() => {
  if (document.querySelector('#attachment-tray progress')) window.__sawProgress = true;
}).observe(document.querySelector('#attachment-tray'), { childList: true, subtree: true });
"""


def give(browser, how, name, content_type, data=None, size=0):
    browser.execute_script(GIVE_FILE, how, name, content_type, base64.b64encode(data).decode() if data is not None else None, size)


def tray(browser):
    return browser.execute_script(
        "return [...document.querySelectorAll('#attachment-tray .tray-item')].map(e => ({name: e.dataset.name, status: e.dataset.status,"
        " error: e.querySelector('.upload-error')?.textContent || ''}))")


def shown_attachments(browser):
    return browser.execute_script(
        """
        return [...document.querySelectorAll('#message-list .message .attachments > *')].map(e => ({
          kind: e.classList.contains('attachment-image') ? 'image' : 'file',
          loaded: e.querySelector('img') ? e.querySelector('img').complete && e.querySelector('img').naturalWidth > 0 : null,
          name: e.querySelector('.file-name')?.textContent || e.querySelector('img')?.alt,
          href: e.getAttribute('href'),
        }));
        """)


def test_attachments_end_to_end(server, browser_factory, artifacts):
    alice = browser_factory()
    bob = browser_factory(width=390, height=844)  # a phone
    sign_up(alice, server, "alice")
    bob_username = sign_up(bob, server, "bob")
    open_chat_between(alice, bob, bob_username)

    # Alice pastes a screenshot: it uploads with a progress bar, then the message goes with it.
    alice.execute_script(WATCH_PROGRESS)
    screenshot = (FIXTURES / "gps.png").read_bytes()
    give(alice, "paste", "screenshot.png", "image/png", screenshot)
    wait(alice).until(lambda b: tray(b) and tray(b)[0]["status"] == "ready")
    assert tray(alice)[0]["name"] == "screenshot.png"
    assert alice.execute_script("return window.__sawProgress") is True
    box = alice.find_element(By.ID, "composer-input")
    box.send_keys("the new dashboard", Keys.ENTER)
    wait(alice).until(lambda b: tray(b) == [])

    # Bob, on his phone, sees the thumbnail (loaded with his session cookie) and opens the viewer.
    wait(bob).until(lambda b: any(a["kind"] == "image" and a["loaded"] for a in shown_attachments(b)))
    bob.find_element(By.CSS_SELECTOR, "#message-list .attachment-image").click()
    viewer = visible(bob, "#viewer")
    wait(bob).until(lambda b: b.execute_script("const i = document.querySelector('#viewer-image'); return i.complete && i.naturalWidth"))
    assert bob.execute_script("return document.querySelector('#viewer-image').naturalWidth") == 640
    assert "screenshot.png" in viewer.find_element(By.ID, "viewer-name").text
    assert bob.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    bob.save_screenshot(str(artifacts / "web-attachment-viewer-phone.png"))
    bob.find_element(By.ID, "viewer-close").click()
    wait(bob).until(lambda b: not b.execute_script("return document.querySelector('#viewer').open"))

    # Alice drops a PDF and sends it without text; Bob gets a chip that downloads it as a file.
    pdf = b"%PDF-1.4\n% Parley test\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    give(alice, "drop", "Q3 report.pdf", "application/pdf", pdf)
    wait(alice).until(lambda b: tray(b) and tray(b)[0]["status"] == "ready")
    alice.find_element(By.ID, "send-button").click()
    wait(bob).until(lambda b: any(a["kind"] == "file" and a["name"] == "Q3 report.pdf" for a in shown_attachments(b)))
    chip = bob.find_element(By.CSS_SELECTOR, "#message-list .attachment-file")
    assert chip.get_attribute("download") == "Q3 report.pdf"
    assert "PDF" in chip.text and "bytes" in chip.text
    fetched = bob.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], { credentials: 'same-origin' }).then(async (r) => done({
          status: r.status, disposition: r.headers.get('content-disposition'), type: r.headers.get('content-type'),
          size: (await r.arrayBuffer()).byteLength }));
        """, chip.get_attribute("href"))
    assert fetched["status"] == 200 and fetched["type"] == "application/pdf" and fetched["size"] == len(pdf)
    assert fetched["disposition"].startswith("attachment;")

    # A file over the limit: the tray says why, and nothing is sent until it is removed.
    give(alice, "paste", "huge.bin", "application/octet-stream", None, 26 * 1024 * 1024)
    wait(alice).until(lambda b: tray(b) and tray(b)[0]["status"] == "failed")
    assert tray(alice)[0]["error"].startswith("Too large")
    alice.find_element(By.CSS_SELECTOR, "#attachment-tray button").click()
    wait(alice).until(lambda b: tray(b) == [])
    no_script_errors(bob)


def open_chat_between(alice, bob, bob_username):
    """A direct chat made from Alice's side (with her session cookie); both browsers open it."""
    status = alice.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        fetch('/api/v1/users?query=' + encodeURIComponent(arguments[0]), { credentials: 'same-origin' })
          .then((r) => r.json()).then((found) => fetch('/api/v1/conversations', {
            method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ type: 'direct', userId: found.users[0].id }) }))
          .then((r) => done(r.status));
        """, bob_username)
    assert status in (200, 201)
    open_conversation(alice, "Bob")
    open_conversation(bob, "Alice")
