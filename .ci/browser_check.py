"""The app's hint flow in a real headless browser (outside the suite: needs chromium, chromedriver and selenium).

    streamlit run app.py --server.headless=true --server.port=8599 -- --ckpt=siggraph17 &
    python .ci/browser_check.py [--url=http://127.0.0.1:8599] [--photo=assets/camera.png] [--shots=/tmp]

Uploads the photo, clicks the hint model's picture, takes the model's last suggested colour, and checks that a hint
appeared in the sidebar and that the picture changed near it and nowhere far from it; screenshots go to --shots. It
waits for what it needs (up to --wait_s each) and says in one line what never came: the page's own warning where the
app said why (a model that cannot load offline, say).
"""

import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver import ActionChains
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import configurator  # noqa: E402

url = "http://127.0.0.1:8599"
photo = "assets/camera.png"
shots = "/tmp"
wait_s = 120.0  # the longest to wait for the app to show what the next step needs (a first model load, a click's answer)
configurator.configure(globals())


def missing(what: str) -> None:
    """One line on what never came, with what the page says instead; a screenshot; exit 1."""
    said = [e.text.strip() for e in d.find_elements(By.CSS_SELECTOR, "[data-testid=stAlert], [data-testid=stException]")]
    d.save_screenshot(str(Path(shots) / "colorgan-missing.png"))
    sys.exit(f"browser_check.py: no {what} after {wait_s:g} s" + (f"; the page says: {' | '.join(said)}" if said else "")
             + f" (screenshot {Path(shots) / 'colorgan-missing.png'})")


def wait_for(what: str, find):
    """find(driver)'s answer once it is truthy; missing(what) when it never is."""
    try:
        return WebDriverWait(d, wait_s, poll_frequency=0.5).until(lambda driver: find(driver))
    except TimeoutException:
        missing(what)


options = Options()
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1300"):
    options.add_argument(a)
driver = shutil.which("chromedriver")  # Debian's, beside its chromium: selenium would otherwise look online for one
d = webdriver.Chrome(options=options, service=Service(driver) if driver else None)
try:
    d.get(url)
    wait_for("photo uploader", lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=file]"))[0].send_keys(str(Path(photo).resolve()))
    wait_for("clickable picture (a model with a hint input)", lambda d: d.find_elements(By.CSS_SELECTOR, "iframe"))
    time.sleep(2)  # the picture inside the frame draws

    def picture():
        """The clickable picture's iframe and its pixels as shown."""
        frame = d.find_elements(By.CSS_SELECTOR, "iframe")[-1]
        return frame, np.asarray(Image.open(io.BytesIO(frame.screenshot_as_png)).convert("RGB")).astype(int)

    frame, before = picture()
    d.switch_to.frame(frame)
    img = d.find_element(By.TAG_NAME, "img")
    ActionChains(d).move_to_element_with_offset(img, 0, int(img.size["height"] * 0.35)).click().perform()
    d.switch_to.default_content()
    side = wait_for("hint in the sidebar after the click", lambda d: next(
        (e for e in d.find_elements(By.CSS_SELECTOR, "section[data-testid=stSidebar]") if "Hint at" in e.text), None))
    swatches = wait_for("suggested colours for the hint", lambda d: [
        e.get_attribute("title") for e in side.find_elements(By.CSS_SELECTOR, "div[title^='#']")])
    buttons = [b for b in side.find_elements(By.TAG_NAME, "button") if b.text.strip().isdigit()]
    assert len(buttons) == len(swatches), (swatches, len(buttons))
    time.sleep(2)
    marked = picture()[1]  # the hint's marker drawn, in the model's own colour there
    buttons[-1].click()
    wait_for("recoloured picture after taking a suggestion", lambda d: np.abs(picture()[1] - marked).sum(-1).max() > 0)
    time.sleep(2)
    frame, after = picture()
    d.save_screenshot(str(Path(shots) / "colorgan-hint.png"))
    diff = np.abs(after - before).sum(-1)
    h, w = diff.shape
    near, far = diff[int(h * 0.8):int(h * 0.9), int(w * 0.45):int(w * 0.55)].mean(), diff[: h // 10, : w // 10].mean()
    print(f"suggestions {swatches}; picture change near the hint {near:.1f}, far from it {far:.1f}; "
          f"screenshot {Path(shots) / 'colorgan-hint.png'}")
    assert near > 5 and far < near / 5
finally:
    d.quit()
