// Which sites LowKey protects uploads on. A site is a host name; it covers that host and every
// subdomain (facebook.com covers www.facebook.com and upload.facebook.com).
//
// The defaults' match patterns are the manifest's `host_permissions` (granted at install); any
// other site is added by the person and needs its optional host permission, asked for at that moment.

/** The big social networks and photo sites. Mastodon has no single host: add your instance. */
export const DEFAULT_SITES = Object.freeze([
  "facebook.com", "messenger.com", "instagram.com", "threads.com", "threads.net", "x.com",
  "twitter.com", "linkedin.com", "reddit.com", "tiktok.com", "bsky.app", "vk.com",
  "pinterest.com", "tumblr.com", "flickr.com",
]);

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const HOST_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export class SiteError extends Error {
  name = "SiteError";
}

/**
 * The site a person typed ("mastodon.social", "https://www.flickr.com/photos/", "127.0.0.1:8080"):
 * its lower-case host name without "www." and without a port. Throws SiteError when it is not one.
 */
export function normalizeSite(text) {
  const trimmed = String(text ?? "").trim().toLowerCase();
  if (!trimmed) throw new SiteError("Type a site, like mastodon.social.");
  let host;
  try {
    host = new URL(trimmed.includes("://") ? trimmed : `https://${trimmed}`).hostname;
  } catch {
    throw new SiteError(`"${trimmed}" is not a site name.`);
  }
  host = host.replace(/^www\./, "").replace(/\.$/, "");
  if (host.startsWith("[") || !(IPV4.test(host) || HOST_NAME.test(host))) {
    throw new SiteError(`"${trimmed}" is not a site name.`);
  }
  return host;
}

/** True for hosts that have no subdomains to cover (IP addresses, single labels like localhost). */
function isBareHost(host) {
  return IPV4.test(host) || !host.includes(".");
}

/** The match patterns (host permissions, content-script matches) that cover `site`. */
export function matchPatterns(site) {
  return isBareHost(site) ? [`*://${site}/*`] : [`*://*.${site}/*`];
}

/** Does `site` cover `hostname` (the host itself or a subdomain)? */
export function siteCovers(site, hostname) {
  const host = String(hostname ?? "").toLowerCase().replace(/\.$/, "");
  return host === site || (!isBareHost(site) && host.endsWith(`.${site}`));
}

/** The site among `sites` ([{host, enabled}]) that covers `hostname`, the most specific first. */
export function findSite(sites, hostname) {
  return sites
    .filter((site) => siteCovers(site.host, hostname))
    .sort((a, b) => b.host.length - a.host.length)[0] ?? null;
}

export function isDefaultSite(host) {
  return DEFAULT_SITES.includes(host);
}
