// Runs in the page's own JavaScript world (MAIN), before the page's scripts. A file input created
// in script and never attached (`document.createElement("input").click()`) fires its events where
// no window listener hears them; this hands such an input to LowKey's content script just before
// its file picker opens. Adds nothing else to the page.
(() => {
  // Must equal DETACHED_INPUT_EVENT in interception.js (the two worlds share no code).
  const DETACHED_INPUT_EVENT = "lowkey:detached-file-input";

  function handOff(element) {
    if (element instanceof HTMLInputElement && element.type === "file" && !element.isConnected) {
      // relatedTarget is the one way to pass a DOM node to the content script's world.
      document.dispatchEvent(new MouseEvent(DETACHED_INPUT_EVENT, { relatedTarget: element }));
    }
  }

  function wrap(prototype, name) {
    const original = prototype[name];
    if (typeof original !== "function") return;
    const wrapped = {
      [name](...args) {
        handOff(this);
        return original.apply(this, args);
      },
    }[name];
    Object.defineProperty(prototype, name, { ...Object.getOwnPropertyDescriptor(prototype, name), value: wrapped });
  }

  wrap(HTMLElement.prototype, "click");
  wrap(HTMLInputElement.prototype, "showPicker");
})();
