// react-dropzone 19 on React 18 (bundled by esbuild when the site starts). ?fs-access turns on
// useFsAccessApi: a click then opens showOpenFilePicker instead of a file input's picker.
import { createElement, useCallback } from "react";
import { createRoot } from "react-dom/client";
import { useDropzone } from "react-dropzone";

import { failed, upload } from "./common.js";

const useFsAccessApi = new URLSearchParams(location.search).has("fs-access");
const channel = useFsAccessApi ? "react-dropzone-fs-access" : "react-dropzone";

function PhotoZone() {
  const onDrop = useCallback((files) => upload(channel, files).catch(failed), []);
  const onError = useCallback(failed, []);
  const { getRootProps, getInputProps } = useDropzone({ onDrop, onError, useFsAccessApi, accept: { "image/*": [] } });
  // react-dropzone 19 also takes a paste on its focused root, through the same onDrop.
  return createElement("div", getRootProps({ id: "zone", style: { padding: 60, border: "2px dashed #888" } }),
    createElement("input", getInputProps()), "Drop photos here, or click to choose");
}

createRoot(document.getElementById("root")).render(createElement(PhotoZone));
