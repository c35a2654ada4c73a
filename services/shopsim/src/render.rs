//! HTML for the listing pages: the shop's 2017 markup and a second, differently
//! structured template, plus `robots.txt`.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::catalogue::{shop_date, shop_duration, Release};

/// Which page markup the shop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// The 2017 back-catalogue listing that the built-in `juno` profile parses.
    #[default]
    Juno,
    /// A table-based layout with separate duration cells, ISO dates and `rel="next"`.
    Table,
}

impl Template {
    /// Path (with query) of listing page `page` (1-based).
    pub fn page_path(self, page: usize) -> String {
        match (self, page) {
            (Template::Juno, 1) => "/all/back-cat/releases/?music_product_type=single".to_string(),
            (Template::Juno, n) => format!("/all/back-cat/releases/{n}/?music_product_type=single"),
            (Template::Table, n) => format!("/catalogue/singles?page={n}"),
        }
    }

    /// Parses a request path back to a page number.
    pub fn page_from_path(self, path: &str, query: Option<&str>) -> Option<usize> {
        match self {
            Template::Juno => {
                if query != Some("music_product_type=single") {
                    return None;
                }
                let rest = path.strip_prefix("/all/back-cat/releases/")?;
                if rest.is_empty() {
                    return Some(1);
                }
                let n: usize = rest.strip_suffix('/')?.parse().ok()?;
                (n >= 2).then_some(n)
            }
            Template::Table => {
                if path != "/catalogue/singles" {
                    return None;
                }
                let n: usize = query?.strip_prefix("page=")?.parse().ok()?;
                (n >= 1).then_some(n)
            }
        }
    }

    /// Path of a track's preview MP3.
    pub fn preview_path(self, shop_id: &str) -> String {
        match self {
            Template::Juno => format!("/MP3/{shop_id}.mp3"),
            Template::Table => format!("/audio/preview/{}.mp3", shop_id.to_ascii_lowercase()),
        }
    }

    /// The shop id named by a preview path, in either template's scheme.
    pub fn shop_id_from_preview_path(path: &str) -> Option<String> {
        if let Some(stem) = path
            .strip_prefix("/MP3/")
            .and_then(|p| p.strip_suffix(".mp3"))
        {
            return Some(stem.to_string());
        }
        path.strip_prefix("/audio/preview/")
            .and_then(|p| p.strip_suffix(".mp3"))
            .map(|stem| stem.to_ascii_uppercase())
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// What a page looks like when the shop breaks it on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    Normal,
    /// Release blocks are mangled (missing title, bad date, rows without links) and
    /// tags are left open; the pager still works.
    Malformed,
}

pub struct PageContext<'a> {
    pub page: usize,
    pub pages: usize,
    pub releases: &'a [&'a Release],
    pub state: PageState,
}

/// Renders a listing page.
pub fn render_page(template: Template, context: &PageContext<'_>) -> String {
    match template {
        Template::Juno => render_juno(context),
        Template::Table => render_table(context),
    }
}

/// The credit text ("A feat B") with each artist name wrapped in its own element.
fn credit_html(release: &Release, open: &str, close: &str) -> String {
    let mut html = String::new();
    let mut rest = release.artist_credit.as_str();
    for artist in &release.artists {
        if let Some(at) = rest.find(artist.as_str()) {
            html.push_str(&escape(&rest[..at]));
            let open = open.replace("{slug}", &slug(artist));
            let _ = write!(html, "<{open}>{}</{close}>", escape(artist));
            rest = &rest[at + artist.len()..];
        }
    }
    html.push_str(&escape(rest));
    html
}

fn render_juno(context: &PageContext<'_>) -> String {
    let mut html = String::with_capacity(4096 + context.releases.len() * 2048);
    html.push_str(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Back catalogue singles</title></head>\n<body>\n\
         <div id=\"header\"><a href=\"/basket/\">Basket</a> \
         <a href=\"/members/back-cat/\">Members' picks</a></div>\n\
         <div class=\"product-list\">\n",
    );
    for (index, release) in context.releases.iter().enumerate() {
        let broken = context.state == PageState::Malformed;
        html.push_str("<div class=\"productlist_widget_container\">\n");
        let _ = write!(
            html,
            "  <div class=\"productlist_widget_product_image\"><img src=\"/images/{}.jpg\" alt=\"\"></div>\n  <div class=\"productlist_widget_product_detail\">\n",
            release.product_id
        );
        let _ = writeln!(
            html,
            "    <div class=\"productlist_widget_product_artists\"><span class=\"jq_highlight pwrtext\">{}</span></div>",
            credit_html(release, "a href=\"/artists/{slug}/\"", "a")
        );
        if !(broken && index % 3 == 0) {
            let _ = writeln!(
                html,
                "    <div class=\"productlist_widget_product_title\"><span class=\"jq_highlight pwrtext\"><a href=\"/products/{}/{}-01/\">{}</a></span></div>",
                slug(&release.title),
                release.product_id,
                escape(&release.title)
            );
        }
        let _ = writeln!(
            html,
            "    <div class=\"productlist_widget_product_label\"><span class=\"jq_highlight pwrtext\"><a href=\"/labels/{}/\">{}</a></span></div>\n  </div>",
            slug(&release.label),
            escape(&release.label)
        );
        html.push_str("  <div class=\"productlist_widget_tracklist_left\">\n");
        for track in &release.tracks {
            let href = if broken && index % 3 == 2 {
                String::new()
            } else {
                format!(" href=\"/MP3/{}.mp3\"", track.shop_id)
            };
            let _ = write!(
                html,
                "    <div class=\"productlist_widget_tracklist_row\">\
                 <div class=\"productlist_widget_tracklist_row_play\"><a{href} data-ua_action=\"play\" class=\"jq_play\"><span class=\"glyphicon glyphicon-play\"></span></a></div>\
                 <div class=\"productlist_widget_tracklist_row_text\"><span class=\"jq_highlight\">\n\t\t\t\t\t{} - ({})\t\t\t\t</span></div></div>\n",
                escape(&track.name),
                shop_duration(track.duration_s)
            );
        }
        html.push_str("  </div>\n");
        let date = if broken && index % 3 == 1 {
            "31 Foo 1x".to_string()
        } else {
            shop_date(release.release_date)
        };
        let _ = writeln!(
            html,
            "  <div class=\"productlist_widget_product_preview_buy\">{}<br><span>{}</span><br><span>{}</span><br><a class=\"btn\" href=\"/basket/add/{}/\">Buy</a></div>",
            escape(&release.catalogue_number),
            escape(&date),
            escape(release.genre.display_name()),
            release.product_id
        );
        if broken {
            // Leave this block's tags open, as a broken page generator would.
            html.push_str("<div class=\"productlist_widget_container_end\"><span><b>\n");
        } else {
            html.push_str("</div>\n");
        }
    }
    html.push_str("</div>\n<div class=\"pagination\">");
    if context.page > 1 {
        let _ = write!(
            html,
            "<a href=\"{}\"><span class=\"glyphicon glyphicon-arrow-left\"></span></a> ",
            escape(&Template::Juno.page_path(context.page - 1))
        );
    }
    let _ = write!(
        html,
        "<span class=\"current\">Page {} of {}</span> ",
        context.page, context.pages
    );
    if context.page < context.pages {
        let _ = write!(
            html,
            "<a href=\"{}\">{}</a> <a href=\"{}\"><span class=\"glyphicon glyphicon-arrow-right\"></span></a>",
            escape(&Template::Juno.page_path(context.page + 1)),
            context.page + 1,
            escape(&Template::Juno.page_path(context.page + 1))
        );
    }
    html.push_str("</div>\n</body></html>\n");
    html
}

fn render_table(context: &PageContext<'_>) -> String {
    let mut html = String::with_capacity(4096 + context.releases.len() * 2048);
    html.push_str(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Singles</title></head><body>\n<main id=\"catalogue\">\n",
    );
    for (index, release) in context.releases.iter().enumerate() {
        let broken = context.state == PageState::Malformed;
        let _ = writeln!(
            html,
            "<section class=\"release\" data-release=\"{}\">",
            release.product_id
        );
        if !(broken && index % 3 == 0) {
            let _ = writeln!(
                html,
                "  <h2 class=\"release-title\">{}</h2>",
                escape(&release.title)
            );
        }
        let _ = writeln!(
            html,
            "  <p class=\"credit\">{}</p>",
            credit_html(release, "span class=\"artist\"", "span")
        );
        let iso = if broken && index % 3 == 1 {
            "2017-13-45".to_string()
        } else {
            release.release_date.format("%Y-%m-%d").to_string()
        };
        let _ = writeln!(
            html,
            "  <dl class=\"facts\"><dt>Label</dt><dd class=\"label\">{}</dd><dt>Cat. no.</dt><dd class=\"catno\">{}</dd>\
             <dt>Released</dt><dd><time datetime=\"{}\">{}</time></dd><dt>Style</dt><dd class=\"style\">{}</dd></dl>",
            escape(&release.label),
            escape(&release.catalogue_number),
            iso,
            release.release_date.format("%B %-d, %Y"),
            escape(release.genre.display_name())
        );
        html.push_str("  <table class=\"tracks\"><tbody>\n");
        for track in &release.tracks {
            let src = if broken && index % 3 == 2 {
                String::new()
            } else {
                format!(
                    " data-src=\"{}\"",
                    Template::Table.preview_path(&track.shop_id)
                )
            };
            let _ = writeln!(
                html,
                "    <tr><td class=\"pos\">{}</td><td class=\"name\">{}</td><td class=\"len\">{}</td><td><button class=\"listen\"{src}>listen</button></td></tr>",
                track.position,
                escape(&track.name),
                shop_duration(track.duration_s)
            );
        }
        html.push_str("  </tbody></table>\n</section>\n");
    }
    html.push_str("</main>\n<nav class=\"pager\">");
    if context.page > 1 {
        let _ = write!(
            html,
            "<a rel=\"prev\" href=\"{}\">Newer</a> ",
            escape(&Template::Table.page_path(context.page - 1))
        );
    }
    if context.page < context.pages {
        let _ = write!(
            html,
            "<a rel=\"next\" href=\"{}\">Older</a>",
            escape(&Template::Table.page_path(context.page + 1))
        );
    }
    html.push_str("</nav>\n</body></html>\n");
    html
}

/// The shop's `robots.txt`: the basket, the members' area and the simulator's own
/// admin paths are off limits.
pub fn robots_txt(crawl_delay_s: Option<f64>) -> String {
    let mut text = String::from(
        "# deepcuts shop simulator\nUser-agent: *\nDisallow: /basket/\nDisallow: /members/\nDisallow: /__shopsim/\n",
    );
    if let Some(delay) = crawl_delay_s {
        let _ = writeln!(text, "Crawl-delay: {delay}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_paths_round_trip() {
        for template in [Template::Juno, Template::Table] {
            for page in [1, 2, 17] {
                let path = template.page_path(page);
                let (p, q) = path.split_once('?').unwrap();
                assert_eq!(template.page_from_path(p, Some(q)), Some(page), "{path}");
            }
            let preview = template.preview_path("SF1354749-02-01-01");
            assert_eq!(
                Template::shop_id_from_preview_path(&preview).as_deref(),
                Some("SF1354749-02-01-01")
            );
        }
        assert_eq!(
            Template::Juno.page_from_path(
                "/all/back-cat/releases/1/",
                Some("music_product_type=single")
            ),
            None
        );
    }

    #[test]
    fn robots_lists_disallowed_paths_and_delay() {
        let text = robots_txt(Some(0.5));
        assert!(text.contains("Disallow: /members/"));
        assert!(text.contains("Crawl-delay: 0.5"));
        assert!(!robots_txt(None).contains("Crawl-delay"));
    }
}
