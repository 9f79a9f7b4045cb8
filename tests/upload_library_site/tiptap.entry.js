// A TipTap 3 composer (a contenteditable): images pasted or dropped into it are uploaded and shown
// inline, through TipTap's FileHandler extension (bundled by esbuild when the site starts).
import { Editor } from "@tiptap/core";
import FileHandler from "@tiptap/extension-file-handler";
import Image from "@tiptap/extension-image";
import StarterKit from "@tiptap/starter-kit";

import { failed, upload } from "./common.js";

function insertImages(editor, files, position) {
  const images = files.map((file) => ({ type: "image", attrs: { src: URL.createObjectURL(file), alt: file.name } }));
  editor.chain().insertContentAt(position ?? editor.state.selection.anchor, images).focus().run();
}

new Editor({
  element: document.getElementById("composer"),
  content: "<p>What's on your mind?</p>",
  extensions: [StarterKit, Image, FileHandler.configure({
    allowedMimeTypes: ["image/jpeg", "image/png", "image/webp"],
    onPaste: (editor, files) => {
      insertImages(editor, files);
      upload("tiptap-paste", files).catch(failed);
    },
    onDrop: (editor, files, position) => {
      insertImages(editor, files, position);
      upload("tiptap-drop", files).catch(failed);
    },
  })],
});
