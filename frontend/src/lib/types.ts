/** A product as returned by `GET /products` and `POST /products`. */
export interface Product {
	id: number;
	name: string;
	url: string | null;
	/** Decimal string such as "12.50", or null before the first price observation. */
	current_price: string | null;
	currency: string;
	/** ISO-8601 timestamp of the last price observation, or null. */
	price_updated_at: string | null;
}

/** One entry of `GET /products/{id}/prices`. */
export interface PricePoint {
	price: string;
	currency: string;
	observed_at: string;
}

/** Body of `POST /products`. */
export interface NewProduct {
	name: string;
	url: string | null;
}
