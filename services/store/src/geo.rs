//! Spherical geometry for backends that evaluate geo queries themselves.

use crate::query::GeoPoint;

/// Mean Earth radius in kilometres, as Parse's SDKs use it.
pub const EARTH_RADIUS_KM: f64 = 6371.0;
/// Mean Earth radius in miles, as Parse's SDKs use it.
pub const EARTH_RADIUS_MILES: f64 = 3958.8;

/// Great-circle distance between two points, in radians.
pub fn distance_radians(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dlat = lat2 - lat1;
    let dlng = (b.longitude - a.longitude).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * h.sqrt().min(1.0).asin()
}

/// Whether `point` lies inside the polygon with the given vertices (ray
/// casting on latitude/longitude, as MongoDB's legacy `$polygon` does).
/// Points on an edge count as inside.
pub fn polygon_contains(vertices: &[GeoPoint], point: GeoPoint) -> bool {
    if vertices.len() < 3 {
        return false;
    }
    let (x, y) = (point.longitude, point.latitude);
    let mut inside = false;
    let mut j = vertices.len() - 1;
    for i in 0..vertices.len() {
        let (xi, yi) = (vertices[i].longitude, vertices[i].latitude);
        let (xj, yj) = (vertices[j].longitude, vertices[j].latitude);
        if on_segment((xi, yi), (xj, yj), (x, y)) {
            return true;
        }
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn on_segment(a: (f64, f64), b: (f64, f64), p: (f64, f64)) -> bool {
    let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
    cross.abs() < 1e-12
        && p.0 >= a.0.min(b.0)
        && p.0 <= a.0.max(b.0)
        && p.1 >= a.1.min(b.1)
        && p.1 <= a.1.max(b.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(latitude: f64, longitude: f64) -> GeoPoint {
        GeoPoint {
            latitude,
            longitude,
        }
    }

    #[test]
    fn distances() {
        let sf = p(37.7749, -122.4194);
        let la = p(34.0522, -118.2437);
        let km = distance_radians(sf, la) * EARTH_RADIUS_KM;
        assert!((km - 559.0).abs() < 2.0, "{km}");
        assert_eq!(distance_radians(sf, sf), 0.0);
    }

    #[test]
    fn polygons() {
        let square = [p(0.0, 0.0), p(0.0, 10.0), p(10.0, 10.0), p(10.0, 0.0)];
        assert!(polygon_contains(&square, p(5.0, 5.0)));
        assert!(polygon_contains(&square, p(0.0, 5.0)));
        assert!(!polygon_contains(&square, p(11.0, 5.0)));
        assert!(!polygon_contains(&square[..2], p(0.0, 5.0)));
    }
}
