"""The app's hint flow in a real headless browser (outside the suite: needs chromium, chromedriver and selenium).

    streamlit run app.py --server.headless=true --server.port=8599 -- --ckpt=siggraph17 &
    python .ci/browser_check.py [--url=http://127.0.0.1:8599] [--photo=assets/camera.png] [--shots=/tmp]

Uploads the photo, clicks the SIGGRAPH17 picture, takes the model's last suggested colour, and checks that a hint
appeared in the sidebar and that the picture changed near it and nowhere far from it; screenshots go to --shots.
"""

import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver import ActionChains
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.common.by import By

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import configurator  # noqa: E402

url = "http://127.0.0.1:8599"
photo = "assets/camera.png"
shots = "/tmp"
wait_s = 12.0  # seconds for the app to answer a click (the model runs on the CPU)
configurator.configure(globals())

options = Options()
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1300"):
    options.add_argument(a)
d = webdriver.Chrome(options=options)
try:
    d.get(url)
    time.sleep(8)
    d.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(Path(photo).resolve()))
    time.sleep(2 * wait_s)

    def picture():
        """The clickable picture's iframe and its pixels as shown."""
        frame = d.find_elements(By.CSS_SELECTOR, "iframe")[-1]
        return frame, np.asarray(Image.open(io.BytesIO(frame.screenshot_as_png)).convert("RGB")).astype(int)

    frame, before = picture()
    d.switch_to.frame(frame)
    img = d.find_element(By.TAG_NAME, "img")
    ActionChains(d).move_to_element_with_offset(img, 0, int(img.size["height"] * 0.35)).click().perform()
    d.switch_to.default_content()
    time.sleep(wait_s)
    side = d.find_element(By.CSS_SELECTOR, "section[data-testid=stSidebar]")
    assert "Hint at" in side.text, side.text
    swatches = [e.get_attribute("title") for e in side.find_elements(By.CSS_SELECTOR, "div[title^='#']")]
    buttons = [b for b in side.find_elements(By.TAG_NAME, "button") if b.text.strip().isdigit()]
    assert swatches and len(buttons) == len(swatches), (swatches, len(buttons))
    buttons[-1].click()
    time.sleep(wait_s)
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
