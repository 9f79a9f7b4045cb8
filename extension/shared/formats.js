// The image formats LowKey knows, decided by a file's first bytes (magic numbers), never by its
// MIME type or name, and what happens to each: protected in kind, converted (GIF -> PNG), or
// stopped. The same table as lowkey_engine/images/formats.py: tests/test_formats_agree.py holds the
// two to the same names, types, extensions, magic numbers and handling, and the daemon lists the
// formats it protects in `welcome.formats`.
//
// A classic script like bridge.js (content scripts cannot be modules): it defines
// globalThis.LowKeyFormats and nothing else.

(() => {
  const Handling = Object.freeze({ IN_KIND: "in_kind", CONVERTED: "converted", STOPPED: "stopped" });

  /** Magic numbers at the start of a file: [[offset, hex bytes], ...], all of which must match. */
  const atStart = (...hexes) => hexes.map((hex) => [[0, hex]]);
  /** BMP: "BM", then at byte 14 the size of one of the DIB headers that exist. */
  const BMP_DIB_HEADER_SIZES = [12, 40, 52, 56, 64, 108, 124];
  const littleEndian32 = (value) => [0, 8, 16, 24].map((shift) => ((value >> shift) & 0xff).toString(16).padStart(2, "0")).join("");

  const FORMATS = [
    { name: "JPEG", mimes: ["image/jpeg", "image/pjpeg"], extensions: ["jpg", "jpeg", "jfif", "jpe"],
      handling: Handling.IN_KIND, signatures: atStart("ffd8ff"), output: "JPEG" },
    { name: "PNG", mimes: ["image/png", "image/apng"], extensions: ["png", "apng"],
      handling: Handling.IN_KIND, signatures: atStart("89504e470d0a1a0a"), output: "PNG" },
    { name: "WEBP", mimes: ["image/webp"], extensions: ["webp"],
      handling: Handling.IN_KIND, signatures: [[[0, "52494646"], [8, "57454250"]]], output: "WEBP" },
    { name: "HEIC", mimes: ["image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"],
      extensions: ["heic", "heif", "hif"], handling: Handling.IN_KIND,
      brands: ["heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs"], output: "HEIC" },
    { name: "AVIF", mimes: ["image/avif"], extensions: ["avif"], handling: Handling.IN_KIND,
      brands: ["avif", "avis"], output: "AVIF" },
    { name: "BMP", mimes: ["image/bmp", "image/x-ms-bmp"], extensions: ["bmp", "dib"], handling: Handling.IN_KIND,
      signatures: BMP_DIB_HEADER_SIZES.map((size) => [[0, "424d"], [14, littleEndian32(size)]]), output: "BMP" },
    { name: "TIFF", mimes: ["image/tiff", "image/tiff-fx"], extensions: ["tif", "tiff"], handling: Handling.IN_KIND,
      signatures: atStart("49492a00", "4d4d002a", "49492b00", "4d4d002b"), output: "TIFF" },
    { name: "GIF", mimes: ["image/gif"], extensions: ["gif"], handling: Handling.CONVERTED,
      signatures: atStart("474946383761", "474946383961"), output: "PNG" },
    { name: "JPEG 2000", mimes: ["image/jp2", "image/jpx", "image/jpm"], extensions: ["jp2", "j2k", "jpf", "jpx", "jpm"],
      handling: Handling.STOPPED, signatures: atStart("0000000c6a5020200d0a870a", "ff4fff51") },
    { name: "JPEG XL", mimes: ["image/jxl"], extensions: ["jxl"], handling: Handling.STOPPED,
      signatures: atStart("0000000c4a584c200d0a870a", "ff0a") },
    { name: "PSD", mimes: ["image/vnd.adobe.photoshop"], extensions: ["psd"], handling: Handling.STOPPED,
      signatures: atStart("38425053") },
    { name: "ICO", mimes: ["image/x-icon", "image/vnd.microsoft.icon"], extensions: ["ico", "cur"],
      handling: Handling.STOPPED, signatures: atStart("00000100", "00000200") },
    { name: "SVG", mimes: ["image/svg+xml"], extensions: ["svg", "svgz"], handling: Handling.STOPPED },  // looksLikeSvg
  ].map((format) => Object.freeze({ signatures: [], brands: [], output: null, ...format }));
  const BY_NAME = Object.fromEntries(FORMATS.map((format) => [format.name, format]));

  /** Generic HEIF brands: a HEIF file whose coding the other brands do not name; read as HEIC. */
  const GENERIC_HEIF_BRANDS = ["mif1", "msf1", "mif2"];
  /** How many leading bytes sniffing reads: enough for the ftyp box's brands and an SVG's root. */
  const SNIFF_BYTES = 1024;
  /** What an SVG starts with (after a byte-order mark and white space); `<svg` must follow. */
  const SVG_STARTS = ["<svg", "<?xml", "<!DOCTYPE svg", "<!--"];

  const ascii = (bytes, start, end) => String.fromCharCode(...bytes.subarray(start, end));
  const hexAt = (bytes, offset, length) => [...bytes.subarray(offset, offset + length)]
    .map((byte) => byte.toString(16).padStart(2, "0")).join("");

  function sniffHeif(bytes) {
    const boxSize = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, false);
    const end = Math.min(boxSize, bytes.length, SNIFF_BYTES);
    const brands = [ascii(bytes, 8, 12)];
    for (let at = 16; at + 4 <= end; at += 4) brands.push(ascii(bytes, at, at + 4));
    for (const brand of brands) {
      const format = FORMATS.find((candidate) => candidate.brands.includes(brand));
      if (format) return format;
    }
    return brands.some((brand) => GENERIC_HEIF_BRANDS.includes(brand)) ? BY_NAME.HEIC : null;
  }

  function looksLikeSvg(bytes) {
    const head = new TextDecoder("latin1").decode(bytes.subarray(0, SNIFF_BYTES));
    const text = head.replace(/^\u00ef\u00bb\u00bf/, "").replace(/^[\t\n\v\f\r ]+/, "");
    return SVG_STARTS.some((start) => text.startsWith(start)) && head.includes("<svg");
  }

  /** The format `bytes` (a Uint8Array of a file's first SNIFF_BYTES or more) is, or null. */
  function sniff(bytes) {
    if (bytes.length >= 8 && ascii(bytes, 4, 8) === "ftyp") return sniffHeif(bytes);
    for (const format of FORMATS) {
      if (format.signatures.some((signature) => signature.every(([offset, hex]) => hexAt(bytes, offset, hex.length / 2) === hex))) {
        return format;
      }
    }
    return looksLikeSvg(bytes) ? BY_NAME.SVG : null;
  }

  /** The format of a File or Blob by its first bytes, or null when it is not an image LowKey knows. */
  async function sniffFile(file) {
    return sniff(new Uint8Array(await file.slice(0, SNIFF_BYTES).arrayBuffer()));
  }

  const extensionOf = (name) => /\.([^./\\]+)$/.exec(name || "")?.[1]?.toLowerCase() ?? "";

  /** Does the file say it is an image, by its type or by its name's extension? */
  function claimsImage(file) {
    const type = (file.type || "").toLowerCase();
    if (type.startsWith("image/")) return true;
    const extension = extensionOf(file.name);
    return FORMATS.some((format) => format.extensions.includes(extension));
  }

  /** `name` with an extension naming `formatName`: kept when it already does, else replaced or added. */
  function filenameFor(name, formatName) {
    if (!name) return name;
    const format = BY_NAME[formatName];
    const dot = name.lastIndexOf(".");
    const stem = dot > 0 ? name.slice(0, dot) : name;
    return dot > 0 && format.extensions.includes(name.slice(dot + 1).toLowerCase()) ? name : `${stem}.${format.extensions[0]}`;
  }

  /** Would an <input accept="..."> take a file of this name and type? An empty accept takes anything. */
  function accepts(accept, name, type) {
    const tokens = (accept || "").split(",").map((token) => token.trim().toLowerCase()).filter(Boolean);
    if (!tokens.length) return true;
    const lowerType = (type || "").toLowerCase();
    const extension = `.${extensionOf(name)}`;
    return tokens.some((token) => token === lowerType || token === extension
      || (token.endsWith("/*") && lowerType.startsWith(token.slice(0, -1))));
  }

  globalThis.LowKeyFormats = Object.freeze({
    Handling, FORMATS: Object.freeze(FORMATS), BY_NAME: Object.freeze(BY_NAME), GENERIC_HEIF_BRANDS, SNIFF_BYTES,
    sniff, sniffFile, claimsImage, filenameFor, accepts,
  });
})();
